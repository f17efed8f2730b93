//! The `#[cached]` attribute of refcache.
//!
//! This crate only generates code; everything it generates calls into `refcache-core` through
//! `<runtime>::__private`. Depend on the `refcache` facade, which re-exports the attribute.
//!
//! The table of every argument (its type, default and meaning) is in the `refcache` crate docs, under "The
//! attribute"; [`cached`] lists the argument names. Each misuse is a compile error at the offending token, pinned
//! by the facade's trybuild tests (`tests/ui/`).
//!
//! # Features
//! None. Whether the generated code uses the MCP integration is decided by the function (`#[tool]` below
//! `#[cached]`), not by a feature, and the runtime crate is found from `Cargo.toml` (`refcache` or
//! `refcache-core`, or the `crate = "..."` argument).
//!
//! # Supported Rust versions
//! Rust 1.88 or newer (edition 2024), as the rest of refcache.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Turns a function into a cached, single-flight, background-continuing task.
///
/// Arguments, all optional: `async_timeout`, `response_format`, `namespace`, `ttl`, `cache`, `name`, `crate`,
/// `skip(..)`, `max_retries`, `retry_backoff`, `retry_backoff_max`, `execution_timeout`, `max_concurrent`,
/// `priority`, `max_size`, `output_limit`, `max_argument_bytes`, `preview`, `policy`, `resolve_refs`. Their types,
/// defaults and meanings are in the table of the `refcache` crate docs ("The attribute").
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}
