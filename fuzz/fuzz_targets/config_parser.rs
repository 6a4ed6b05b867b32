//! The plugin configuration parser never panics, and what it accepts is complete.
#![no_main]

use obo_core::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Every `${NAME}` resolves, so the fuzzer can reach the checks behind the expansion.
    let env = |name: &str| match name {
        "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT" | "TOKEN_X_TOKEN_ENDPOINT" => {
            Some("https://login.example/t/oauth2/v2.0/token".to_string())
        }
        // Keys: only a client_jwk in the input is parsed (a "value-of-..." key would refuse
        // every configuration that relies on the secret variable).
        "UNSET" | "AZURE_APP_JWK" | "TOKEN_X_PRIVATE_JWK" => None,
        other => Some(format!("value-of-{other}")),
    };
    if let Ok(cfg) = config::parse(data, &env) {
        assert!(!cfg.targets.is_empty());
        // Every target names a provider that exists, and every provider is complete.
        assert!(cfg.targets.iter().all(|t| t.provider < cfg.providers.len()));
        assert!(cfg.targets.iter().all(|t| !t.resource.trim().is_empty()));
        for provider in &cfg.providers {
            assert!(!provider.token_cluster.trim().is_empty());
            assert!(provider.token_endpoint.path.starts_with('/'));
        }
        assert!(cfg.cache.max_entries >= 1);
    }
});
