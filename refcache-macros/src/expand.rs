//! Code generation for `#[cached]`.
//!
//! A function
//! ```text
//! #[cached(async_timeout = 5.0)]
//! async fn index(corpus: String, ctx: TaskContext) -> Result<Report, Error> { body }
//! ```
//! becomes a wrapper with the same name and parameters (minus the `TaskContext`), returning
//! `Result<CachedResponse, RefCacheError>`. The original body moves into an inner function (a nested one for free
//! functions, a hidden sibling method for methods). The wrapper hashes the key arguments, asks the cache for a hit,
//! and on a miss hands the cache the JSON arguments and a job that deserializes them and calls the inner function.
//! Free functions whose parameters are all key arguments are also registered by name for remote workers.

use proc_macro2::{Span, TokenStream};
use quote::{ToTokens, format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Attribute, FnArg, GenericArgument, Ident, ItemFn, Pat, PathArguments, ReturnType, Type};

use crate::attr::{Args, Errors, Format, Policy, Strategy};

/// Types recognised as context: they are not part of the key and are handed to the background task as they are.
const CONTEXT_TYPES: &[&str] = &["RequestContext", "Peer", "Extension", "Meta"];

pub(crate) fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    let result = syn::parse2::<Args>(args).and_then(|args| {
        let func: ItemFn = syn::parse2(item.clone())?;
        expand(args, func)
    });
    match result {
        Ok(tokens) => tokens,
        // Emit the user's function beside the error, so that one mistake does not cascade into many.
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #item)
        }
    }
}

enum Kind {
    /// Part of the key: serialized, hashed, deserialized again when the task runs.
    Key,
    /// Left out of the key; the background task keeps a clone.
    Captured,
    /// The task's `TaskContext`, supplied by the runtime (`by_ref`: declared as `&TaskContext`).
    Context { by_ref: bool },
}

struct Param {
    /// The name in the wrapper.
    ident: Ident,
    /// The name in the JSON arguments.
    name: String,
    ty: Type,
    kind: Kind,
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

fn is_named(ty: &Type, names: &[&str]) -> bool {
    last_segment(ty).is_some_and(|s| names.iter().any(|n| s.ident == n))
}

fn runtime_path(args: &Args) -> TokenStream {
    use proc_macro_crate::{FoundCrate, crate_name};
    if let Some(path) = &args.krate {
        return path.to_token_stream();
    }
    let found = |name: &str, own: &str| match crate_name(name) {
        Ok(FoundCrate::Itself) => {
            let ident = Ident::new(own, Span::call_site());
            Some(quote!(::#ident))
        }
        Ok(FoundCrate::Name(renamed)) => {
            let ident = Ident::new(&renamed, Span::call_site());
            Some(quote!(::#ident))
        }
        Err(_) => None,
    };
    found("refcache", "refcache")
        .or_else(|| found("refcache-core", "refcache_core"))
        .unwrap_or_else(|| quote!(::refcache))
}

/// `Pin<Box<dyn Future ..>>`: what `#[tool]` turns an `async fn` into.
fn returns_pinned_future(output: &ReturnType) -> bool {
    match output {
        ReturnType::Type(_, ty) => {
            last_segment(ty).is_some_and(|s| s.ident == "Pin")
                && ty.to_token_stream().to_string().contains("Future")
        }
        ReturnType::Default => false,
    }
}

/// rmcp's `#[tool]`, by any path.
fn is_tool_attr(attr: &Attribute) -> bool {
    attr.path()
        .segments
        .last()
        .is_some_and(|s| s.ident == "tool")
}

fn is_lint_or_cfg(attr: &Attribute) -> bool {
    ["allow", "warn", "deny", "forbid", "expect", "cfg"]
        .iter()
        .any(|n| attr.path().is_ident(n))
}

fn doc_text(attrs: &[Attribute]) -> Option<String> {
    let lines: Vec<String> = attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .filter_map(|a| match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_owned()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    let text = lines.join("\n").trim().to_owned();
    if text.is_empty() { None } else { Some(text) }
}

fn type_text(ty: &Type) -> String {
    ty.to_token_stream()
        .to_string()
        .replace(" :: ", "::")
        .replace(":: ", "::")
        .replace(" <", "<")
        .replace("< ", "<")
        .replace(" >", ">")
        .replace(" ,", ",")
        .replace("& ", "&")
}

fn duration(secs: f64) -> TokenStream {
    let nanos = (secs * 1e9).round() as u64;
    quote!(::core::time::Duration::from_nanos(#nanos))
}

fn expand(args: Args, func: ItemFn) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let sig = &func.sig;
    if let Some(c) = &sig.constness {
        errors.push(syn::Error::new(
            c.span(),
            "#[cached] cannot be used on a `const fn`: its work runs later, on a runtime; remove `const`",
        ));
    }
    if let Some(u) = &sig.unsafety {
        errors.push(syn::Error::new(
            u.span(),
            "#[cached] cannot be used on an `unsafe fn`",
        ));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new(
            abi.span(),
            "#[cached] cannot be used on an `extern` function",
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new(
            sig.generics.span(),
            "#[cached] functions cannot be generic: a worker must be able to name every argument type; \
             call a concrete #[cached] function from the generic one instead",
        ));
    }
    if let Some(v) = &sig.variadic {
        errors.push(syn::Error::new(
            v.span(),
            "#[cached] functions cannot be variadic",
        ));
    }

    // `#[tool]` below `#[cached]`: the wrapper becomes an rmcp tool that runs the flow through `<runtime>::mcp`.
    let tool_attr = func.attrs.iter().find(|a| is_tool_attr(a));
    let is_tool = tool_attr.is_some();
    if sig.asyncness.is_none() && returns_pinned_future(&sig.output) {
        errors.push(syn::Error::new(
            sig.output.span(),
            "#[cached] sees a function that already returns a pinned future: put #[cached] above #[tool], so \
             that it sees the `async fn` as written",
        ));
    }

    let mut is_method = false;
    let mut params = Vec::new();
    for (index, input) in sig.inputs.iter().enumerate() {
        match input {
            FnArg::Receiver(r) => {
                if r.reference.is_none() || r.mutability.is_some() || r.colon_token.is_some() {
                    errors.push(syn::Error::new(
                        r.span(),
                        "#[cached] methods take `&self`: the work continues in the background on a clone of `self`",
                    ));
                }
                is_method = true;
            }
            FnArg::Typed(pt) => {
                let (ident, name) = match &*pt.pat {
                    Pat::Ident(pi) if pi.subpat.is_none() && pi.by_ref.is_none() => {
                        let name = pi.ident.to_string();
                        (pi.ident.clone(), name.trim_start_matches("r#").to_owned())
                    }
                    // rmcp's `Parameters(args): Parameters<T>`: the tool's argument object.
                    _ if is_named(&pt.ty, &["Parameters"]) => (
                        format_ident!("__refcache_arg{}", index),
                        "params".to_owned(),
                    ),
                    _ => (
                        format_ident!("__refcache_arg{}", index),
                        format!("arg{index}"),
                    ),
                };
                let ty = (*pt.ty).clone();
                let skipped = args.skip.contains(&ident);
                let kind = match &ty {
                    Type::Reference(r) if is_named(&r.elem, &["TaskContext"]) => {
                        Kind::Context { by_ref: true }
                    }
                    t if is_named(t, &["TaskContext"]) => Kind::Context { by_ref: false },
                    Type::Reference(_) => {
                        errors.push(syn::Error::new(
                            ty.span(),
                            "#[cached] arguments must be owned (for example `String`, not `&str`): the work \
                             continues in the background, after the caller's borrow ends",
                        ));
                        Kind::Key
                    }
                    Type::ImplTrait(_) => {
                        errors.push(syn::Error::new(
                            ty.span(),
                            "#[cached] arguments cannot be `impl Trait`: a worker must be able to name the type",
                        ));
                        Kind::Key
                    }
                    t if skipped || is_named(t, CONTEXT_TYPES) => Kind::Captured,
                    _ => Kind::Key,
                };
                params.push(Param {
                    ident,
                    name,
                    ty,
                    kind,
                });
            }
        }
    }
    for s in &args.skip {
        if !params.iter().any(|p| p.ident == *s) {
            errors.push(syn::Error::new(
                s.span(),
                format!("`skip({s})`: this function has no parameter `{s}`"),
            ));
        }
    }
    if let (Some(_), Some(cache)) = (tool_attr, &args.cache) {
        errors.push(syn::Error::new(
            cache.span(),
            "`cache = ..` cannot be used on a #[tool]: its tasks must live in the cache that `get_cached_result` and \
             `tasks/get` read, the server's `RefCacheServer::refcache()`; build that `McpRefCache` from this cache \
             instead",
        ));
    }
    if let Some(tool) = tool_attr
        && !is_method
    {
        errors.push(syn::Error::new(
            tool.span(),
            "#[cached] on a #[tool] must be a method of the server (`&self`, in a `#[tool_router]` impl): its \
             ready-made tools and owners come from the server's `RefCacheServer` impl",
        ));
    }
    errors.finish()?;

    let krate = runtime_path(&args);
    let p = quote!(#krate::__private);
    let fn_name = &sig.ident;
    let vis = &func.vis;
    let is_async = sig.asyncness.is_some();

    // Success type and how the return value becomes JSON.
    let (success_ty, is_result): (Type, bool) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), false),
        ReturnType::Type(_, ty) => match last_segment(ty) {
            Some(seg) if seg.ident == "Result" => {
                let ok = match &seg.arguments {
                    PathArguments::AngleBracketed(a) => a.args.iter().find_map(|g| match g {
                        GenericArgument::Type(t) => Some(t.clone()),
                        _ => None,
                    }),
                    _ => None,
                };
                (ok.unwrap_or_else(|| syn::parse_quote!(())), true)
            }
            _ => ((**ty).clone(), false),
        },
    };

    // Attributes: lints and cfgs go on both functions; everything else (docs, #[tool], ...) on the wrapper only.
    let inner_attrs: Vec<&Attribute> = func.attrs.iter().filter(|a| is_lint_or_cfg(a)).collect();
    // `#[tool]` first, the user's attributes (doc comment included) after it in their order.
    let wrapper_attrs: Vec<&Attribute> = func
        .attrs
        .iter()
        .filter(|a| is_tool_attr(a))
        .chain(func.attrs.iter().filter(|a| !is_tool_attr(a)))
        .collect();

    let inner_ident = if is_method {
        format_ident!("__refcache_inner_{}", fn_name)
    } else {
        format_ident!("__refcache_inner")
    };
    let inner_sig = {
        let mut s = sig.clone();
        s.ident = inner_ident.clone();
        s
    };
    let block = &func.block;
    let inner_fn = quote! {
        #(#inner_attrs)*
        #[doc(hidden)]
        #[allow(clippy::too_many_arguments, clippy::unused_async, non_snake_case)]
        #inner_sig #block
    };

    // The wrapper's parameters: all but the TaskContext, with generated names for patterns.
    let mut wrapper_inputs = Vec::new();
    let mut typed = params.iter();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => wrapper_inputs.push(r.to_token_stream()),
            FnArg::Typed(pt) => {
                let param = typed.next().expect("one param per typed input");
                if !matches!(param.kind, Kind::Context { .. }) {
                    let attrs = &pt.attrs;
                    let ident = &param.ident;
                    let ty = &param.ty;
                    wrapper_inputs.push(quote!(#(#attrs)* #ident: #ty));
                }
            }
        }
    }

    if is_tool {
        // rmcp extractors: the format override must come before `Parameters<T>`, which takes the arguments.
        let at = usize::from(is_method);
        wrapper_inputs.insert(at, quote!(__refcache_format: #krate::mcp::FormatOverride));
        wrapper_inputs.push(quote!(
            __refcache_request: #krate::mcp::rmcp::service::RequestContext<#krate::mcp::rmcp::RoleServer>
        ));
    }

    // Key arguments, sorted by name: the key hashes the canonical object, whose keys are sorted.
    let mut key_params: Vec<&Param> = params
        .iter()
        .filter(|p| matches!(p.kind, Kind::Key))
        .collect();
    key_params.sort_by(|a, b| a.name.cmp(&b.name));
    let captured: Vec<&Param> = params
        .iter()
        .filter(|p| matches!(p.kind, Kind::Captured))
        .collect();

    let key_asserts = key_params.iter().map(|param| {
        let ty = &param.ty;
        quote_spanned!(ty.span()=> #p::assert_key_arg::<#ty>();)
    });
    let captured_asserts = captured.iter().map(|param| {
        let ty = &param.ty;
        quote_spanned!(ty.span()=> #p::assert_captured::<#ty>();)
    });
    let key_args = key_params.iter().map(|param| {
        let ident = &param.ident;
        let name = &param.name;
        quote_spanned!(param.ty.span()=> __refcache_kb.arg(#name, &#ident)?;)
    });
    let json_args = key_params.iter().map(|param| {
        let ident = &param.ident;
        let name = &param.name;
        quote_spanned! {param.ty.span()=>
            __refcache_json.insert(::std::string::String::from(#name), #p::arg_value(__refcache_meta, #name, &#ident)?);
        }
    });
    let check_args = key_params.iter().map(|param| {
        let name = &param.name;
        let ty = &param.ty;
        quote_spanned!(ty.span()=> #p::check_arg::<#ty>(__refcache_resolved, #name)?;)
    });
    let take_args: Vec<TokenStream> = key_params
        .iter()
        .map(|param| {
            let ident = &param.ident;
            let name = &param.name;
            let ty = &param.ty;
            quote_spanned!(ty.span()=> let #ident: #ty = #p::take_arg(&mut __refcache_args, #name)?;)
        })
        .collect();
    let call_args: Vec<TokenStream> = params
        .iter()
        .map(|param| match param.kind {
            Kind::Context { by_ref: true } => quote!(&__refcache_ctx),
            Kind::Context { by_ref: false } => quote!(__refcache_ctx),
            _ => param.ident.to_token_stream(),
        })
        .collect();
    let uses_ctx = params
        .iter()
        .any(|p| matches!(p.kind, Kind::Context { .. }));
    let ctx_binding = if uses_ctx {
        quote!()
    } else {
        quote!(let _ = &__refcache_ctx;)
    };

    let inner_call = if is_method {
        quote!(Self::#inner_ident(&__refcache_this, #(#call_args),*))
    } else {
        quote!(#inner_ident(#(#call_args),*))
    };
    let into_result = |call: TokenStream| {
        if is_result {
            // The error type decides whether a retry may help: a `TaskError` keeps its flag and details, a
            // `Retryable` type answers for itself, any other `Display` type is retryable (autoref specialization).
            quote! {
                match #call {
                    ::core::result::Result::Ok(__refcache_value) => #p::value_result(__refcache_value),
                    ::core::result::Result::Err(__refcache_error) => {
                        #[allow(unused_imports)]
                        use #p::{ErrViaDisplay as _, ErrViaRetryable as _, ErrViaTaskError as _};
                        #p::assert_error(&__refcache_error);
                        ::core::result::Result::Err((&&&#p::ErrProbe(&__refcache_error)).task_error())
                    }
                }
            }
        } else {
            quote!(#p::value_result(#call))
        }
    };
    // The body of a task: arguments from JSON, then the function.
    let task_body = if is_async {
        let result = into_result(quote!(#inner_call.await));
        quote! {
            ::std::boxed::Box::pin(async move {
                #ctx_binding
                let mut __refcache_args = #p::into_args(__refcache_args)?;
                #(#take_args)*
                #result
            })
        }
    } else {
        let result = into_result(inner_call.clone());
        quote! {
            let __refcache_actor = __refcache_ctx.actor().cloned();
            ::std::boxed::Box::pin(#p::run_blocking_as(__refcache_actor, move || {
                #ctx_binding
                let mut __refcache_args = #p::into_args(__refcache_args)?;
                #(#take_args)*
                #result
            }))
        }
    };

    let name_expr = match (&args.name, is_method) {
        (Some(lit), _) => quote!(::std::string::String::from(#lit)),
        (None, true) => quote!(#p::method_name::<Self>(::core::stringify!(#fn_name))),
        (None, false) => quote!(::std::string::String::from(::core::concat!(
            ::core::module_path!(),
            "::",
            ::core::stringify!(#fn_name)
        ))),
    };
    let namespace = args
        .namespace
        .as_ref()
        .map_or_else(|| "public".to_owned(), |l| l.value());
    let opt_duration = |secs: Option<f64>| {
        secs.map_or_else(
            || quote!(::core::option::Option::None),
            |s| {
                let d = duration(s);
                quote!(::core::option::Option::Some(#d))
            },
        )
    };
    let retry_backoff = opt_duration(args.retry_backoff);
    let retry_backoff_max = opt_duration(args.retry_backoff_max);
    let execution_timeout = opt_duration(args.execution_timeout);
    let max_retries = args.max_retries.unwrap_or(0);
    let priority = args.priority.unwrap_or(0);
    let max_concurrent = args.max_concurrent.map_or_else(
        || quote!(::core::option::Option::None),
        |n| quote!(::core::option::Option::Some(#n)),
    );
    let ttl = args.ttl.map_or_else(
        || quote!(::core::option::Option::None),
        |s| {
            let d = duration(s);
            quote!(::core::option::Option::Some(#d))
        },
    );
    let timeout = args.async_timeout.map_or_else(
        || quote!(::core::option::Option::None),
        |s| {
            let d = duration(s);
            quote!(::core::option::Option::Some(#d))
        },
    );
    let format = match args.response_format.unwrap_or(Format::Standard) {
        Format::Minimal => quote!(#krate::AsyncResponseFormat::Minimal),
        Format::Standard => quote!(#krate::AsyncResponseFormat::Standard),
        Format::Full => quote!(#krate::AsyncResponseFormat::Full),
    };
    let max_size = args.max_size.map_or_else(
        || quote!(::core::option::Option::None),
        |n| {
            let n = n as usize;
            quote!(::core::option::Option::Some(#n))
        },
    );
    let output_limit = args.output_limit.map_or_else(
        || quote!(::core::option::Option::None),
        |n| {
            let n = n as usize;
            quote!(::core::option::Option::Some(#n))
        },
    );
    let max_argument_bytes = args.max_argument_bytes.map_or_else(
        || quote!(::core::option::Option::None),
        |n| {
            let n = usize::try_from(n).unwrap_or(usize::MAX);
            quote!(::core::option::Option::Some(#n))
        },
    );
    let strategy = args.preview.map_or_else(
        || quote!(::core::option::Option::None),
        |s| {
            let variant = match s {
                Strategy::Sample => quote!(Sample),
                Strategy::Paginate => quote!(Paginate),
                Strategy::Truncate => quote!(Truncate),
            };
            quote!(::core::option::Option::Some(#krate::PreviewStrategy::#variant))
        },
    );
    let policy = match &args.policy {
        None => quote!(#krate::AccessPolicy::public()),
        Some(Policy::Preset(name)) => {
            let ctor = format_ident!("{}", name);
            quote!(#krate::AccessPolicy::#ctor())
        }
        Some(Policy::Expr(expr)) => {
            quote_spanned!(expr.span()=> { let __refcache_policy: #krate::AccessPolicy = #expr; __refcache_policy })
        }
    };
    let resolve_refs = args.resolve_refs.unwrap_or(true);
    let return_type = type_text(&success_ty);
    let description = doc_text(&func.attrs).map_or_else(
        || quote!(::core::option::Option::None),
        |d| quote!(::core::option::Option::Some(#d)),
    );

    // A free function whose parameters are all key arguments can run in a worker: register it by name.
    let registrable = !is_method && captured.is_empty();
    let (run_fn, job) = if registrable {
        let name_static = match &args.name {
            Some(lit) => quote!(#lit),
            None => quote!(::core::concat!(
                ::core::module_path!(),
                "::",
                ::core::stringify!(#fn_name)
            )),
        };
        let run_fn = quote! {
            #[allow(clippy::needless_question_mark, non_snake_case)]
            fn __refcache_run(
                __refcache_args: #p::serde_json::Value,
                __refcache_ctx: #krate::TaskContext,
            ) -> #p::BoxFuture<'static, ::core::result::Result<#krate::JsonText, #krate::TaskError>> {
                #task_body
            }
            fn __refcache_name() -> &'static str {
                #name_static
            }
            #p::inventory::submit! {
                #p::TaskRegistration::new(__refcache_name, __refcache_run)
            }
        };
        (run_fn, quote!(#p::job_of(__refcache_run)))
    } else {
        let clone_this = if is_method {
            quote!(let __refcache_this = ::core::clone::Clone::clone(&__refcache_this);)
        } else {
            quote!()
        };
        let clone_captured = captured.iter().map(|param| {
            let ident = &param.ident;
            quote!(let #ident = ::core::clone::Clone::clone(&#ident);)
        });
        let job = quote! {
            ::std::sync::Arc::new(move |
                __refcache_args: #p::serde_json::Value,
                __refcache_ctx: #krate::TaskContext,
            | -> #p::BoxFuture<'static, ::core::result::Result<#krate::JsonText, #krate::TaskError>> {
                #clone_this
                #(#clone_captured)*
                #task_body
            })
        };
        (quote!(), job)
    };

    let this = if is_method {
        quote!(let __refcache_this = #p::clone_self(self);)
    } else {
        quote!()
    };
    let cache = match &args.cache {
        Some(expr) => {
            quote_spanned!(expr.span()=> #[allow(unused_parens)] let __refcache_cache: &#krate::RefCache = &(#expr);)
        }
        None if is_tool => quote!(
            let __refcache_cache: &#krate::RefCache =
                #krate::mcp::RefCacheServer::refcache(self).cache();
        ),
        None => quote!(let __refcache_cache: &#krate::RefCache = #p::default_cache()?;),
    };
    let call = if is_tool {
        quote!(
            __refcache_cache
                .call(
                    __refcache_meta,
                    __refcache_key,
                    __refcache_scope,
                    __refcache_prepare
                )
                .await
        )
    } else if is_async {
        quote! {
                        if #p::in_runtime() {
                __refcache_cache.call(__refcache_meta, __refcache_key, __refcache_scope, __refcache_prepare).await
            } else {
                #p::call_outside_runtime(
                    __refcache_cache,
                    __refcache_meta,
                    __refcache_key,
                    __refcache_scope,
                    __refcache_prepare,
                )
                .await
            }
        }
    } else {
        quote!(#p::call_blocking(__refcache_cache, __refcache_meta, __refcache_key, __refcache_scope, __refcache_prepare))
    };
    let asyncness = if is_tool {
        quote!(async)
    } else {
        sig.asyncness.to_token_stream()
    };
    let output = if is_tool {
        quote!(::core::result::Result<#krate::mcp::rmcp::model::CallToolResponse, #krate::mcp::rmcp::ErrorData>)
    } else {
        quote!(::core::result::Result<#krate::CachedResponse, #krate::RefCacheError>)
    };
    let inner_in_body = if is_method {
        quote!()
    } else {
        inner_fn.clone()
    };
    let inner_beside = if is_method { inner_fn } else { quote!() };

    let flow = quote! {
            #(#key_asserts)*
            #(#captured_asserts)*
            static __REFCACHE_META: ::std::sync::OnceLock<#p::TaskMeta> = ::std::sync::OnceLock::new();
            let __refcache_meta: &'static #p::TaskMeta = #p::meta(&__REFCACHE_META, || {
                #p::TaskMeta::new(
                    #name_expr,
                    #namespace,
                    #krate::TaskOptions::default()
                        .ttl(#ttl)
                        .max_retries(#max_retries)
                        .retry_backoff(#retry_backoff, #retry_backoff_max)
                        .execution_timeout(#execution_timeout)
                        .max_concurrent(#max_concurrent)
                        .priority(#priority)
                        .preview(#max_size, #strategy)
                        .output_limit(#output_limit),
                    #timeout,
                    #format,
                    #return_type,
                    #description,
                    || {
                        #[allow(unused_imports)]
                        use #p::{ViaJsonSchema as _, ViaNoSchema as _};
                        (&&#p::SchemaProbe::<#success_ty>::new()).schema()
                    },
                )
                .with_policy(#policy)
                .with_resolve_refs(#resolve_refs)
                .with_max_argument_bytes(#max_argument_bytes)
            });
            let mut __refcache_scope = #p::CallScope::capture(__refcache_meta)?;
            let __refcache_key = {
                let mut __refcache_kb =
                    #p::KeyBuilder::with_prefix(__refcache_meta.name(), __refcache_scope.key_prefix(__refcache_meta))
                        .limit(__refcache_meta.max_argument_bytes().unwrap_or(__refcache_cache.max_argument_bytes()));
                #(#key_args)*
                __refcache_scope.note_refs(__refcache_meta, &__refcache_kb, |__refcache_resolved| {
                    #(#check_args)*
                    ::core::result::Result::Ok(())
                });
                __refcache_kb.finish()
            };
            #this
            let __refcache_prepare = move || {
                let mut __refcache_json = #p::serde_json::Map::new();
                #(#json_args)*
                let __refcache_job: #krate::LocalJob = #job;
                ::core::result::Result::Ok((#p::serde_json::Value::Object(__refcache_json), __refcache_job))
            };
            #call
    };
    let body = if is_tool {
        // The same flow, run as the request's owner by the MCP layer, which turns its answer into a tool result.
        quote! {
            #cache
            #krate::mcp::__private::tool_call(
                self,
                __refcache_cache,
                __refcache_format,
                __refcache_request,
                async { #flow },
            )
            .await
        }
    } else {
        quote!(#cache #flow)
    };

    Ok(quote! {
        #inner_beside

        // Lints first: rmcp's `#[tool]` takes the doc comment only from the doc attributes at the end of the list.
        #[allow(clippy::needless_question_mark, clippy::redundant_closure_call, clippy::too_many_arguments)]
        #(#wrapper_attrs)*
        #vis #asyncness fn #fn_name(#(#wrapper_inputs),*) -> #output {
            #inner_in_body
            #run_fn
            #body
        }
    })
}
