//! The filter's configuration, parsed once when Envoy loads it: the same JSON and the same checks
//! as the Wasm build (`obo_core::config`), every problem logged with its field.

use obo_core::config::{self, ClientAuth, Config};
use obo_core::exchange::Worker;

use crate::abi::LogLevel;
use crate::envoy::{self, ConfigEnvoy};
use crate::state::ConfigState;

/// The configuration's state (on the heap, where it stays until the destroy hook), or None (Envoy
/// then refuses it) after logging every problem.
pub fn load(envoy_config: ConfigEnvoy, json: &[u8]) -> Option<Box<ConfigState>> {
    // `${NAME}` and the AZURE_* defaults come from Envoy's own environment.
    match config::parse(json, &|name| std::env::var(name).ok()) {
        Ok(config) => {
            envoy::log(LogLevel::INFO, &config::summary(&config));
            // The root refreshes a fetched client assertion ahead of its `exp` on a tick, which the
            // Wasm build's root has every second; without such a provider it may sleep.
            let fetches = config
                .providers
                .iter()
                .any(|p| matches!(p.client_auth, ClientAuth::Fetched(_)));
            let idle_tick_ms = if fetches { 1_000 } else { 0 };
            let mut worker = Worker::default();
            worker.configure(for_all_workers(config));
            Some(Box::new(ConfigState::new(
                envoy_config,
                worker,
                idle_tick_ms,
            )))
        }
        Err(errors) => {
            for e in errors.iter() {
                envoy::log(LogLevel::ERROR, &e.to_string());
            }
            None
        }
    }
}

/// The Wasm build has one worker state per Envoy worker thread; this build has one for all of
/// them. Its per-worker limits are those of all workers together, so that the same configuration
/// allows as many exchanges in flight and keeps as many tokens in memory in either build.
fn for_all_workers(mut config: Config) -> Config {
    let workers = envoy::concurrency().max(1);
    config.max_exchanges_in_flight_per_worker = config
        .max_exchanges_in_flight_per_worker
        .saturating_mul(workers);
    config.cache.worker_entries = config.cache.worker_entries.saturating_mul(workers);
    config
}
