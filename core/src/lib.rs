//! The decisions of entra-obo-filter, with no proxy-wasm in them: a shell implements `host::Host`
//! and hands each request to `filter::RequestFilter`. Which module decides what: the design
//! document's "Where things are" and the "Layout" table in `docs/development.md`.

// A panic aborts the worker's Wasm VM (and would take a native proxy down). Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod assertion_source;
pub mod authority;
pub mod backoff;
pub mod cache_key;
pub mod claims_challenge;
pub mod client_assertion;
pub mod config;
pub mod drop_signal;
pub mod error_reply;
pub mod exchange;
pub mod filter;
pub mod front_cache;
pub mod host;
pub mod json;
pub mod lease;
pub mod metrics;
pub mod request_path;
pub mod shared_data;
pub mod subject_token;
pub mod target_match;
pub mod token_cache;
pub mod token_request;
pub mod token_response;

#[cfg(test)]
mod testing;
