//! The arguments of `#[cached(...)]` and their parsing. Every bad argument is reported at once, at its own tokens.

use std::collections::HashSet;

use proc_macro2::Span;
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Path, Token, UnOp};

/// The names `#[cached]` accepts, in the order the error message lists them.
const KNOWN: &[&str] = &[
    "async_timeout",
    "response_format",
    "namespace",
    "ttl",
    "cache",
    "name",
    "crate",
    "skip",
    "max_retries",
    "retry_backoff",
    "retry_backoff_max",
    "execution_timeout",
    "max_concurrent",
    "priority",
    "max_size",
    "output_limit",
    "max_argument_bytes",
    "preview",
    "resolve_refs",
    "policy",
];

/// `preview = "..."`.
#[derive(Clone, Copy)]
pub(crate) enum Strategy {
    Sample,
    Paginate,
    Truncate,
}

/// `policy = ...`.
pub(crate) enum Policy {
    /// A preset by name.
    Preset(String),
    /// An expression of type `AccessPolicy`, evaluated once.
    Expr(Box<Expr>),
}

/// `response_format = "..."`.
#[derive(Clone, Copy)]
pub(crate) enum Format {
    Minimal,
    Standard,
    Full,
}

/// The parsed arguments.
#[derive(Default)]
pub(crate) struct Args {
    pub(crate) async_timeout: Option<f64>,
    pub(crate) response_format: Option<Format>,
    pub(crate) namespace: Option<LitStr>,
    pub(crate) ttl: Option<f64>,
    pub(crate) cache: Option<Expr>,
    pub(crate) name: Option<LitStr>,
    pub(crate) krate: Option<Path>,
    pub(crate) skip: Vec<Ident>,
    pub(crate) max_retries: Option<u32>,
    pub(crate) retry_backoff: Option<f64>,
    pub(crate) retry_backoff_max: Option<f64>,
    pub(crate) execution_timeout: Option<f64>,
    pub(crate) max_concurrent: Option<u32>,
    pub(crate) priority: Option<i32>,
    pub(crate) max_size: Option<u64>,
    pub(crate) output_limit: Option<u64>,
    pub(crate) max_argument_bytes: Option<u64>,
    pub(crate) preview: Option<Strategy>,
    pub(crate) resolve_refs: Option<bool>,
    pub(crate) policy: Option<Policy>,
}

/// Collects errors so that all of them are reported together.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }

    pub(crate) fn finish(self) -> syn::Result<()> {
        self.0.map_or(Ok(()), Err)
    }
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args::default();
        let mut errors = Errors::default();
        let mut seen = HashSet::new();
        while !input.is_empty() {
            let key = input.call(Ident::parse_any)?;
            let name = key.to_string();
            if !seen.insert(name.clone()) && KNOWN.contains(&name.as_str()) {
                errors.push(syn::Error::new(
                    key.span(),
                    format!("`{name}` set multiple times"),
                ));
            }
            match name.as_str() {
                "skip" => {
                    let content;
                    syn::parenthesized!(content in input);
                    let names = Punctuated::<Ident, Token![,]>::parse_terminated(&content)?;
                    args.skip.extend(names);
                }
                "async_timeout" => {
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    match seconds(&expr, "async_timeout") {
                        Ok(secs) => args.async_timeout = Some(secs),
                        Err(e) => errors.push(e),
                    }
                }
                "ttl" | "retry_backoff" | "retry_backoff_max" | "execution_timeout" => {
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    match seconds(&expr, &name) {
                        Ok(secs) => {
                            let slot = match name.as_str() {
                                "ttl" => &mut args.ttl,
                                "retry_backoff" => &mut args.retry_backoff,
                                "retry_backoff_max" => &mut args.retry_backoff_max,
                                _ => &mut args.execution_timeout,
                            };
                            *slot = Some(secs);
                        }
                        Err(e) => errors.push(e),
                    }
                }
                "max_size" => {
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    match integer(&expr, "max_size") {
                        Ok(n) if n > 0 => args.max_size = Some(n as u64),
                        Ok(_) => errors.push(syn::Error::new_spanned(
                            &expr,
                            "`max_size` must be a positive whole number (tokens or characters, as the cache \
                             measures), such as `max_size = 2000`",
                        )),
                        Err(e) => errors.push(e),
                    }
                }
                "output_limit" => {
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    match integer(&expr, "output_limit") {
                        Ok(n) if n > 0 => args.output_limit = Some(n as u64),
                        Ok(_) => errors.push(syn::Error::new_spanned(
                            &expr,
                            "`output_limit` must be a positive number of bytes: the cap of the task's output log, \
                             such as `output_limit = 65536`",
                        )),
                        Err(e) => errors.push(e),
                    }
                }
                "max_argument_bytes" => {
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    match integer(&expr, "max_argument_bytes") {
                        Ok(n) if n > 0 => args.max_argument_bytes = Some(n as u64),
                        Ok(_) => errors.push(syn::Error::new_spanned(
                            &expr,
                            "`max_argument_bytes` must be a positive whole number of bytes, such as \
                             `max_argument_bytes = 4194304`",
                        )),
                        Err(e) => errors.push(e),
                    }
                }
                "preview" => {
                    input.parse::<Token![=]>()?;
                    let lit = string(input, "preview", "\"sample\"")?;
                    match lit.value().as_str() {
                        "sample" => args.preview = Some(Strategy::Sample),
                        "paginate" => args.preview = Some(Strategy::Paginate),
                        "truncate" => args.preview = Some(Strategy::Truncate),
                        other => errors.push(syn::Error::new(
                            lit.span(),
                            format!(
                                "invalid `preview` \"{other}\"; expected one of: \"sample\", \"paginate\", \
                                 \"truncate\""
                            ),
                        )),
                    }
                }
                "resolve_refs" => {
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    match &expr {
                        Expr::Lit(ExprLit {
                            lit: Lit::Bool(b), ..
                        }) => args.resolve_refs = Some(b.value),
                        _ => errors.push(syn::Error::new_spanned(
                            &expr,
                            "`resolve_refs` takes `true` or `false`, such as `resolve_refs = false`",
                        )),
                    }
                }
                "policy" => {
                    input.parse::<Token![=]>()?;
                    if input.peek(LitStr) {
                        let lit: LitStr = input.parse()?;
                        let name = lit.value();
                        if ["public", "user_only", "read_only", "execute_only"]
                            .contains(&name.as_str())
                        {
                            args.policy = Some(Policy::Preset(name));
                        } else {
                            errors.push(syn::Error::new(
                                lit.span(),
                                format!(
                                    "unknown policy preset \"{name}\"; expected one of: \"public\", \"user_only\", \
                                     \"read_only\", \"execute_only\", or an expression of type \
                                     `refcache::AccessPolicy`"
                                ),
                            ));
                        }
                    } else {
                        args.policy = Some(Policy::Expr(Box::new(input.parse()?)));
                    }
                }
                "max_retries" | "max_concurrent" | "priority" => {
                    input.parse::<Token![=]>()?;
                    let expr: Expr = input.parse()?;
                    match integer(&expr, &name) {
                        Ok(n) => match name.as_str() {
                            "max_retries" => match u32::try_from(n) {
                                Ok(n) => args.max_retries = Some(n),
                                Err(_) => errors.push(syn::Error::new_spanned(
                                    &expr,
                                    "`max_retries` must be a whole number from 0 to 4294967295, such as `max_retries = 3`",
                                )),
                            },
                            "max_concurrent" => match u32::try_from(n) {
                                Ok(n) if n > 0 => args.max_concurrent = Some(n),
                                _ => errors.push(syn::Error::new_spanned(
                                    &expr,
                                    "`max_concurrent` must be a positive whole number, such as `max_concurrent = 2`",
                                )),
                            },
                            _ => match i32::try_from(n) {
                                Ok(n) => args.priority = Some(n),
                                Err(_) => errors.push(syn::Error::new_spanned(
                                    &expr,
                                    "`priority` must be a whole number that fits an i32, such as `priority = 10`",
                                )),
                            },
                        },
                        Err(e) => errors.push(e),
                    }
                }
                "response_format" => {
                    input.parse::<Token![=]>()?;
                    let lit = string(input, "response_format", "\"standard\"")?;
                    match lit.value().as_str() {
                        "minimal" => args.response_format = Some(Format::Minimal),
                        "standard" => args.response_format = Some(Format::Standard),
                        "full" => args.response_format = Some(Format::Full),
                        other => errors.push(syn::Error::new(
                            lit.span(),
                            format!(
                                "invalid `response_format` \"{other}\"; expected one of: \"minimal\", \"standard\", \
                                 \"full\""
                            ),
                        )),
                    }
                }
                "namespace" | "name" => {
                    input.parse::<Token![=]>()?;
                    let example = if name == "name" {
                        "\"indexing::index_corpus\""
                    } else {
                        "\"jobs\""
                    };
                    let lit = string(input, &name, example)?;
                    if lit.value().trim().is_empty() {
                        errors.push(syn::Error::new(
                            lit.span(),
                            format!("`{name}` must not be empty"),
                        ));
                    } else if name == "namespace"
                        && let Err(reason) = check_namespace(&lit.value())
                    {
                        errors.push(syn::Error::new(
                            lit.span(),
                            format!(
                                "invalid `namespace` \"{}\": {reason}; use `public`, `session:<id>`, `user:<id>`, \
                                 `agent:<id>`, `shared:<group>`, a custom name, or a template such as \
                                 \"user:{{user_id}}\"",
                                lit.value()
                            ),
                        ));
                    }
                    if name == "name" {
                        args.name = Some(lit)
                    } else {
                        args.namespace = Some(lit)
                    }
                }
                "cache" => {
                    input.parse::<Token![=]>()?;
                    args.cache = Some(input.parse()?);
                }
                "crate" => {
                    input.parse::<Token![=]>()?;
                    let lit = string(input, "crate", "\"refcache\"")?;
                    match lit.parse_with(Path::parse_mod_style) {
                        Ok(mut path) => {
                            if path.leading_colon.is_none() && path.segments.first().is_some_and(|s| s.ident != "crate") {
                                path.leading_colon = Some(Token![::](lit.span()));
                            }
                            args.krate = Some(path);
                        }
                        Err(_) => errors.push(syn::Error::new(
                            lit.span(),
                            "`crate` must be a path to the refcache runtime, such as \"refcache\" or \"::my_reexport::refcache\"",
                        )),
                    }
                }
                _ => {
                    errors.push(syn::Error::new(
                        key.span(),
                        format!(
                            "unknown argument `{name}`; expected one of: {}",
                            KNOWN.join(", ")
                        ),
                    ));
                    // Skip its value so that the arguments after it are still checked.
                    if input.peek(Token![=]) {
                        input.parse::<Token![=]>()?;
                        input.parse::<Expr>()?;
                    } else if input.peek(syn::token::Paren) {
                        let _content;
                        syn::parenthesized!(_content in input);
                    }
                }
            }
            if input.is_empty() {
                break;
            }
            input.parse::<Token![,]>()?;
        }
        errors.finish()?;
        Ok(args)
    }
}

/// Checks a namespace or namespace template as `refcache_core::NamespaceTemplate::parse` does at run time, so that
/// a bad one is a compile error at its literal.
fn check_namespace(text: &str) -> Result<(), String> {
    let mut rest = text;
    let mut fixed = true;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("it has a `}` without a `{`".into());
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "it has a `{` without a `}`".to_owned())?;
        let name = &after[..close];
        if name.is_empty()
            || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || name.as_bytes()[0].is_ascii_digit()
        {
            return Err(format!(
                "`{{{name}}}` is not a variable name (letters, digits and `_`)"
            ));
        }
        fixed = false;
        rest = &after[close + 1..];
    }
    if let Some(c) = text.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("it contains {c:?}"));
    }
    if text.len() > 256 {
        return Err("it is longer than 256 bytes".into());
    }
    if fixed
        && let Some((prefix @ ("session" | "user" | "agent" | "shared"), "")) = text.split_once(':')
    {
        return Err(format!("`{prefix}:` needs an id after the colon"));
    }
    Ok(())
}

fn string(input: ParseStream<'_>, key: &str, example: &str) -> syn::Result<LitStr> {
    if input.peek(LitStr) {
        return input.parse();
    }
    let expr: Expr = input.parse()?;
    Err(syn::Error::new_spanned(
        expr,
        format!("`{key}` takes a string literal, such as `{key} = {example}`"),
    ))
}

/// A whole number from a literal, possibly negative.
fn integer(expr: &Expr, key: &str) -> syn::Result<i64> {
    let expected = || {
        syn::Error::new_spanned(
            expr,
            format!("`{key}` takes a whole number, such as `{key} = 3`"),
        )
    };
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => i.base10_parse(),
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr: inner,
            ..
        }) => match &**inner {
            Expr::Lit(ExprLit {
                lit: Lit::Int(i), ..
            }) => i.base10_parse::<i64>().map(|v| -v),
            _ => Err(expected()),
        },
        _ => Err(expected()),
    }
}

/// A positive number of seconds from a literal.
fn seconds(expr: &Expr, key: &str) -> syn::Result<f64> {
    let positive = |span: Span, shown: String| {
        syn::Error::new(
            span,
            format!(
                "`{key}` must be a positive number of seconds, such as `{key} = 5.0`; got {shown}"
            ),
        )
    };
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Float(f), ..
        }) => {
            let v: f64 = f.base10_parse()?;
            if v > 0.0 && v.is_finite() {
                Ok(v)
            } else {
                Err(positive(f.span(), f.to_string()))
            }
        }
        Expr::Lit(ExprLit {
            lit: Lit::Int(i), ..
        }) => {
            let v: u64 = i.base10_parse()?;
            if v > 0 {
                Ok(v as f64)
            } else {
                Err(positive(i.span(), i.to_string()))
            }
        }
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_), ..
        }) => Err(positive(
            syn::spanned::Spanned::span(expr),
            quote::ToTokens::to_token_stream(expr)
                .to_string()
                .replace(' ', ""),
        )),
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Err(syn::Error::new(
            s.span(),
            format!("`{key}` takes a number of seconds, such as `{key} = 5.0`, not a string"),
        )),
        other => Err(syn::Error::new_spanned(
            other,
            format!("`{key}` takes a number literal of seconds, such as `{key} = 5.0`"),
        )),
    }
}
