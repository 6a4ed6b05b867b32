//! The proxy-wasm shell over `obo_core`, deciding nothing: the root context (`root`), the request
//! context (`http`), and the core's `Host` over the hostcalls (`host_calls`).

// A panic aborts the worker's Wasm VM: the shell returns errors instead. Tests may panic.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]
// Compiled natively too, so `cargo clippy` and the unit tests check it; only the wasm build uses it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code, unused_imports))]

mod host_calls;
mod http;
mod root;

#[cfg(target_arch = "wasm32")]
proxy_wasm::main! {{
    // A panic aborts the VM; its message goes to Envoy's log first. (The SDK's set_log_level does
    // the same and also installs a `log` crate logger, which nothing here uses.)
    std::panic::set_hook(Box::new(|panic| {
        let _ = proxy_wasm::hostcalls::log(proxy_wasm::types::LogLevel::Critical, &panic.to_string());
    }));
    proxy_wasm::set_root_context(root::new_root_context);
}}
