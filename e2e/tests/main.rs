//! The end-to-end suite, one binary with a module per area: the real Envoy with the real `.wasm`
//! (`ENVOY_BIN`, `OBO_WASM`; `make test` sets both). `cargo test -p obo-e2e --test e2e routing::`
//! runs one area.

mod cache;
mod client_auth;
mod config;
mod delegation;
mod exchange;
mod failures;
mod grants;
mod grpc;
mod layout;
mod logs;
mod make_run;
mod manifests;
mod metrics;
mod module;
mod native;
mod onprem_proxy;
mod resilience;
mod routing;
mod self_contained;
mod tenants;
mod workload_identity;
