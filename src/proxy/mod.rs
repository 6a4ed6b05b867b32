//! The thin shell over proxy-wasm: the root context (configuration, re-sent exchanges), the
//! request context (pause and resume), and the `Host` implementation over the real hostcalls.
//! Everything that decides something lives outside this module.

mod host_calls;
mod http;
mod root;

pub use root::new_root_context;
