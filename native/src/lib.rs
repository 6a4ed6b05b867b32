//! The native shell over `obo_core`: an Envoy dynamic module (`libentra_obo_native.so`) that Envoy
//! 1.38 to 1.40 loads as an HTTP filter, with the same JSON configuration and the same decisions
//! as the Wasm build. The project's own bindings (`abi`), safe calls into Envoy (`envoy`), the
//! hooks Envoy calls (`hooks`), the configuration (`config`) and its state shared by every worker
//! thread (`state`: one `Worker` behind a lock, `shared_data`, `ticker`, `metrics`), one stream's
//! filter (`filter`), the core's `Host` (`host`), and the actions on streams that wait until the
//! worker's lock is released (`streams`); `answer` reads a token request's answer, and
//! `token_file` answers a fetch of workload identity's token file from the file.

// A panic must never reach Envoy: the shell returns errors instead. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

// Every hook catches a panic of its body (`guard`), which needs unwinding. With panic = "abort"
// a bug in one request would take the whole proxy down, every connection of every worker, where
// unwinding lets the hook fail that request (or refuse that configuration) and Envoy go on. The
// workspace's release profile aborts (right for the Wasm build, where a panic ends only the VM),
// so this crate is built with the `native` profile (`make native`).
#[cfg(panic = "abort")]
compile_error!(
    "entra-obo-native needs panic = \"unwind\": build it with `make native` (--profile native)"
);

pub mod abi;
mod answer;
mod config;
mod envoy;
mod filter;
mod hooks;
mod host;
mod metrics;
mod shared_data;
mod state;
mod streams;
mod ticker;
mod token_file;

use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a hook's body; a panic in it is logged and becomes `fallback`, never an unwind into Envoy.
fn guard<T>(hook: &str, fallback: T, body: impl FnOnce() -> T) -> T {
    // AssertUnwindSafe: after a panic the hook only logs and returns the fallback; it reads none
    // of the state the body may have left half-changed.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(value) => value,
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            // The log call itself must not panic again: it only formats and hands bytes over.
            let _ = catch_unwind(|| {
                envoy::log(
                    abi::LogLevel::CRITICAL,
                    &format!("{hook} failed (a bug in the filter): {message}"),
                )
            });
            fallback
        }
    }
}
