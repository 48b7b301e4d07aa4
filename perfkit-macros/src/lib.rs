//! Procedural macros for [perfkit](https://docs.rs/perfkit).
//!
//! This crate is an implementation detail of `perfkit`; depend on `perfkit` and use the
//! re-exports from there (`perfkit::hot_path`).
#![deny(missing_docs)]

mod expand;

use proc_macro::TokenStream;

/// Measures every call of a function: its duration (`perfkit_hot_path_seconds`), its
/// outcome (`perfkit_hot_path_calls_total{outcome}`: `ok`, `err`, `panic`, `cancelled`) and
/// the calls in flight (`perfkit_hot_path_in_flight`), labelled `function` and `module`.
///
/// See `perfkit::hot_path` for the documentation.
#[proc_macro_attribute]
pub fn hot_path(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::hot_path(args.into(), item.into()).into()
}
