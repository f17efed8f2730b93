//! The `#[cached]` attribute of refcache.
//!
//! This crate only generates code; everything it generates calls into `refcache-core` through
//! `<runtime>::__private`. Depend on the `refcache` facade, which re-exports the attribute; its docs describe the
//! arguments.

mod attr;
mod expand;

use proc_macro::TokenStream;

/// Turns a function into a cached, single-flight, background-continuing task. See the `refcache` crate docs.
#[proc_macro_attribute]
pub fn cached(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::cached(args.into(), item.into()).into()
}
