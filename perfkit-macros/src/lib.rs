//! Procedural macros for [perfkit](https://docs.rs/perfkit).
//!
//! This crate is an implementation detail of `perfkit`; depend on `perfkit` and use the
//! re-exports from there. It currently exports nothing: the `#[hot_path]` attribute lands here.
#![deny(missing_docs)]
