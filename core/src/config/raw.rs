//! The configuration as written: each field read with its type and default, not yet cross-checked.

use serde_json::Value;

use super::fields::{ConfigError, Fields};
use super::types::{ExistingAuthorization, Grant, Unmatched};
use crate::assertion_source::SourceFormat;
use crate::client_assertion::SigningAlg;

const DEFAULT_TOKEN_TIMEOUT_MS: u64 = 5_000;
const DEFAULT_MAX_ENTRIES: u32 = 10_000;
const DEFAULT_EXPIRY_SKEW_S: u64 = 60;
const DEFAULT_WORKER_ENTRIES: u32 = 1_024;
const DEFAULT_REFRESH_AHEAD_S: u64 = 300;
const DEFAULT_REFRESH_AHEAD_PERCENT: u64 = 10;
const DEFAULT_CLAIMS_CHALLENGE_HOLDOFF_S: u64 = 60;
const DEFAULT_SUBJECT_TOKEN_LEEWAY_S: u64 = 60;
const DEFAULT_NEGATIVE_CACHE_S: u64 = 5;
const DEFAULT_BACKOFF_S: u64 = 5;
const DEFAULT_BACKOFF_MAX_S: u64 = 60;
const DEFAULT_ASSERTION_LIFETIME_S: u64 = 60;
/// Below Envoy's default circuit breakers on the token cluster (1024 requests) with a few workers.
const DEFAULT_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER: u32 = 100;

pub(super) struct RawConfig {
    pub(super) default: RawProvider,
    pub(super) providers: Vec<(String, RawProvider)>,
    pub(super) token_timeout_ms: u64,
    pub(super) targets: Vec<RawTarget>,
    pub(super) unmatched: Unmatched,
    pub(super) envoy_normalizes_paths: bool,
    pub(super) max_exchanges_in_flight_per_worker: u32,
    pub(super) cache: RawCache,
    pub(super) require_audience: bool,
    pub(super) subject_token_leeway_s: u64,
    pub(super) negative_cache_s: u64,
    pub(super) backoff: RawBackoff,
}

impl RawConfig {
    pub(super) fn read(f: &mut Fields) -> Self {
        let default = RawProvider::read(f);
        let providers = match f.value("providers") {
            None => Vec::new(),
            Some(Value::Object(map)) => map
                .into_iter()
                .filter_map(|(name, value)| {
                    let path = format!("providers.{name}");
                    let mut fields = Fields::of(value, &path, f.problems)?;
                    let provider = RawProvider::read(&mut fields);
                    fields.finish();
                    Some((name, provider))
                })
                .collect(),
            Some(_) => {
                let problem = "must be an object of named providers";
                f.problems.0.push(ConfigError::new("providers", problem));
                Vec::new()
            }
        };
        let targets = match f.value("targets") {
            None => {
                f.problems
                    .0
                    .push(ConfigError::new("targets", "is required"));
                None
            }
            Some(Value::Array(items)) => Some(
                items
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, item)| {
                        let mut fields = Fields::of(item, &format!("targets[{i}]"), f.problems)?;
                        let target = RawTarget::read(&mut fields);
                        fields.finish();
                        Some(target)
                    })
                    .collect(),
            ),
            Some(_) => {
                f.problems
                    .0
                    .push(ConfigError::new("targets", "must be a list"));
                None
            }
        };
        RawConfig {
            default,
            providers,
            token_timeout_ms: f.or("token_timeout_ms", DEFAULT_TOKEN_TIMEOUT_MS),
            targets: targets.unwrap_or_default(),
            unmatched: f.or("unmatched", Unmatched::default()),
            envoy_normalizes_paths: f.or("envoy_normalizes_paths", false),
            max_exchanges_in_flight_per_worker: f.or(
                "max_exchanges_in_flight_per_worker",
                DEFAULT_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER,
            ),
            cache: f.object("cache", RawCache::read),
            require_audience: f.or("require_audience", false),
            subject_token_leeway_s: f.or("subject_token_leeway_s", DEFAULT_SUBJECT_TOKEN_LEEWAY_S),
            negative_cache_s: f.or("negative_cache_s", DEFAULT_NEGATIVE_CACHE_S),
            backoff: f.object("backoff", RawBackoff::read),
        }
    }
}

pub(super) struct RawProvider {
    pub(super) token_cluster: Option<String>,
    pub(super) token_endpoint: Option<String>,
    pub(super) client_id: Option<String>,
    pub(super) client_secret: Option<String>,
    /// A JWK: a JSON object, or a string holding one (`${AZURE_APP_JWK}`).
    pub(super) client_jwk: Option<Value>,
    pub(super) client_assertion: RawAssertion,
    pub(super) client_assertion_source: RawSource,
    pub(super) grant: Grant,
    pub(super) existing_authorization: Option<ExistingAuthorization>,
    pub(super) allowed_issuers: Option<Value>,
    pub(super) allowed_tenants: Option<Value>,
    pub(super) actor: RawActor,
}

impl RawProvider {
    fn read(f: &mut Fields) -> Self {
        RawProvider {
            token_cluster: f.opt("token_cluster"),
            token_endpoint: f.opt("token_endpoint"),
            client_id: f.opt("client_id"),
            client_secret: f.secret("client_secret"),
            client_jwk: f.value("client_jwk"),
            client_assertion: f.object("client_assertion", RawAssertion::read),
            client_assertion_source: f.object("client_assertion_source", RawSource::read),
            grant: f.or("grant", Grant::default()),
            existing_authorization: f.opt("existing_authorization"),
            allowed_issuers: f.value("allowed_issuers"),
            allowed_tenants: f.value("allowed_tenants"),
            actor: f.object("actor", RawActor::read),
        }
    }
}

#[derive(Default)]
pub(super) struct RawActor {
    /// Whether the object has any field.
    pub(super) configured: bool,
    pub(super) provider: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) token_type: Option<String>,
}

impl RawActor {
    fn read(f: &mut Fields) -> Self {
        RawActor {
            configured: !f.is_empty(),
            provider: f.opt("provider"),
            scope: f.opt("scope"),
            token_type: f.opt("token_type"),
        }
    }
}

pub(super) struct RawAssertion {
    /// Whether the object has any field: it applies only with a private key.
    pub(super) configured: bool,
    pub(super) alg: SigningAlg,
    pub(super) audience: Option<String>,
    pub(super) lifetime_s: u64,
    pub(super) reuse_s: Option<u64>,
}

impl RawAssertion {
    fn read(f: &mut Fields) -> Self {
        RawAssertion {
            configured: !f.is_empty(),
            alg: f.or("alg", SigningAlg::default()),
            audience: f.opt("audience"),
            lifetime_s: f.or("lifetime_s", DEFAULT_ASSERTION_LIFETIME_S),
            reuse_s: f.opt("reuse_s"),
        }
    }
}

pub(super) struct RawSource {
    /// Whether the object has any field.
    pub(super) configured: bool,
    pub(super) cluster: Option<String>,
    pub(super) path: Option<String>,
    pub(super) authority: Option<String>,
    pub(super) format: SourceFormat,
    /// A user-assigned managed identity's client id (`imds` only).
    pub(super) client_id: Option<String>,
}

impl RawSource {
    fn read(f: &mut Fields) -> Self {
        RawSource {
            configured: !f.is_empty(),
            cluster: f.opt("cluster"),
            path: f.opt("path"),
            authority: f.opt("authority"),
            format: f.or("format", SourceFormat::default()),
            client_id: f.opt("client_id"),
        }
    }
}

pub(super) struct RawBackoff {
    pub(super) default_s: u64,
    pub(super) max_s: u64,
}

impl RawBackoff {
    fn read(f: &mut Fields) -> Self {
        RawBackoff {
            default_s: f.or("default_s", DEFAULT_BACKOFF_S),
            max_s: f.or("max_s", DEFAULT_BACKOFF_MAX_S),
        }
    }
}

pub(super) struct RawTarget {
    pub(super) host: Option<String>,
    pub(super) cluster: Option<String>,
    pub(super) path_prefix: Option<String>,
    pub(super) scope: Option<String>,
    pub(super) audience: Option<String>,
    /// RFC 8707: a URI, or a list of them.
    pub(super) resource: Option<Value>,
    pub(super) provider: Option<String>,
}

impl RawTarget {
    fn read(f: &mut Fields) -> Self {
        RawTarget {
            host: f.opt("host"),
            cluster: f.opt("cluster"),
            path_prefix: f.opt("path_prefix"),
            scope: f.opt("scope"),
            audience: f.opt("audience"),
            resource: f.value("resource"),
            provider: f.opt("provider"),
        }
    }
}

pub(super) struct RawCache {
    pub(super) max_entries: u32,
    pub(super) expiry_skew_s: u64,
    pub(super) worker_entries: u32,
    pub(super) refresh_ahead_s: u64,
    pub(super) refresh_ahead_percent: u64,
    pub(super) claims_challenge_holdoff_s: u64,
}

impl RawCache {
    fn read(f: &mut Fields) -> Self {
        RawCache {
            max_entries: f.or("max_entries", DEFAULT_MAX_ENTRIES),
            expiry_skew_s: f.or("expiry_skew_s", DEFAULT_EXPIRY_SKEW_S),
            worker_entries: f.or("worker_entries", DEFAULT_WORKER_ENTRIES),
            refresh_ahead_s: f.or("refresh_ahead_s", DEFAULT_REFRESH_AHEAD_S),
            refresh_ahead_percent: f.or("refresh_ahead_percent", DEFAULT_REFRESH_AHEAD_PERCENT),
            claims_challenge_holdoff_s: f.or(
                "claims_challenge_holdoff_s",
                DEFAULT_CLAIMS_CHALLENGE_HOLDOFF_S,
            ),
        }
    }
}
