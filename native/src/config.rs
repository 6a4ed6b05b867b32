//! The filter's configuration, parsed once when Envoy loads it: the same JSON and the same checks
//! as the Wasm build (`obo_core::config`), every problem logged with its field.

use obo_core::config::{self, Config};

use crate::abi::{ConfigEnvoyPtr, LogLevel};
use crate::envoy;

/// What `on_http_filter_config_new` hands Envoy, and Envoy hands back to every stream's filter.
pub struct FilterConfig {
    /// What every stream decides with (next step).
    #[allow(dead_code)]
    pub config: Config,
    /// Envoy's side of this configuration: callouts and schedulers from it (next step).
    #[allow(dead_code)]
    pub envoy: ConfigEnvoyPtr,
}

/// The configuration, or None (Envoy then refuses it) after logging every problem.
pub fn load(envoy_config: ConfigEnvoyPtr, json: &[u8]) -> Option<FilterConfig> {
    // `${NAME}` and the AZURE_* defaults come from Envoy's own environment.
    match config::parse(json, &|name| std::env::var(name).ok()) {
        Ok(config) => {
            envoy::log(LogLevel::INFO, &config::summary(&config));
            Some(FilterConfig {
                config,
                envoy: envoy_config,
            })
        }
        Err(errors) => {
            for e in errors.iter() {
                envoy::log(LogLevel::ERROR, &e.to_string());
            }
            None
        }
    }
}
