//! The decisions of entra-obo-filter, with no proxy-wasm in them: a shell (the Wasm filter
//! today) implements `host::Host` over its proxy and hands each request to `filter::RequestFilter`.
//!
//! Where things are decided:
//! - `config`: the plugin configuration, parsed and validated once;
//! - `target_match`: which target (and scope) a request is for, read as Envoy's router reads it
//!   (`authority`: the strict `host[:port]`; `request_path`: paths a normalizer would change);
//! - `subject_token`: the caller's bearer token and its `exp`;
//! - `cache_key`, `token_cache`: the cache key and the shared-data slot table;
//! - `front_cache`: each worker's small cache in front of it, for the hot path;
//! - `drop_signal`: how every worker learns that a token was dropped from the shared cache;
//! - `claims_challenge`: an upstream's claims challenge, and when it drops the cached token;
//! - `token_request`, `token_response`: the OBO request and reading its answer;
//! - `exchange`: one token request per key, shared by all who wait for it, retried once;
//! - `lease`: which worker sends it when several need the same token;
//! - `backoff`: how long a scope waits after the IdP throttled or failed;
//! - `error_reply`: every refusal as a status code, headers, body and log line;
//! - `metrics`: the counters and the latency histogram Envoy's stats show;
//! - `filter`: one request's way through all of the above.
//!
//! `shared_data` names every shared-data key (the contract between workers and between module
//! versions); `json` reads typed values out of parsed JSON for all of them.

// A panic aborts the worker's Wasm VM (and would take a native proxy down): code returns errors
// instead. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

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
