//! Checking the configuration as written against itself: ranges, providers, targets.

use std::time::Duration;

use serde_json::Value;

use super::actor::{resolve_actors, WrittenActor};
use super::fields::{non_empty, ConfigError, ConfigErrors, Problems};
use super::provider::validate_provider;
use super::raw::{RawConfig, RawTarget};
use super::types::{BackoffSettings, CacheSettings, Config, Grant, Provider, SubjectTokenSettings};
use crate::json;
use crate::target_match::{ClusterPattern, HostPattern, Target};

const MAX_TOKEN_TIMEOUT_MS: u64 = 300_000;
const MAX_MAX_ENTRIES: u32 = 1_000_000;
const MAX_WORKER_ENTRIES: u64 = 100_000;
const MAX_CLAIMS_CHALLENGE_HOLDOFF_S: u64 = 3_600;
const MAX_EXPIRY_SKEW_S: u64 = 3_600;
const MAX_SUBJECT_TOKEN_LEEWAY_S: u64 = 3_600;
const MAX_NEGATIVE_CACHE_S: u64 = 300;
const MAX_BACKOFF_S: u64 = 3_600;
const MAX_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER: u32 = 10_000;

pub(super) fn validate(
    raw: RawConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigErrors> {
    let mut p = Problems::default();
    // The default provider is validated when a target uses it, or when it is configured at all.
    let default = raw.default;
    let default_used = raw.targets.iter().any(|t| t.provider.is_none());
    let mut providers = Vec::new();
    // Each provider's name, index (None if it is invalid) and grant.
    let mut names: Vec<(String, Option<usize>, Grant)> = Vec::new();
    let mut actors = Vec::new();
    if default_used || default.token_cluster.is_some() {
        let mut default = default;
        let grant = default.grant;
        let actor = std::mem::take(&mut default.actor);
        let provider = validate_provider("", "default", default, raw.require_audience, env, &mut p);
        let index = provider.map(|pr| push(&mut providers, pr));
        names.push(("default".into(), index, grant));
        actors.push(WrittenActor {
            prefix: String::new(),
            index,
            grant,
            raw: actor,
        });
    }
    for (name, mut raw_provider) in raw.providers {
        let prefix = format!("providers.{name}.");
        if name.trim().is_empty() || name == "default" {
            p.0.push(ConfigError::new(
                format!("providers.{name}"),
                "needs a name other than \"\" and \"default\"",
            ));
            continue;
        }
        let grant = raw_provider.grant;
        let actor = std::mem::take(&mut raw_provider.actor);
        let provider = validate_provider(
            &prefix,
            &name,
            raw_provider,
            raw.require_audience,
            env,
            &mut p,
        );
        let index = provider.map(|pr| push(&mut providers, pr));
        names.push((name, index, grant));
        actors.push(WrittenActor {
            prefix,
            index,
            grant,
            raw: actor,
        });
    }
    resolve_actors(actors, &names, &mut providers, &mut p);
    if !(1..=MAX_TOKEN_TIMEOUT_MS).contains(&raw.token_timeout_ms) {
        p.0.push(ConfigError::new(
            "token_timeout_ms",
            format!("must be between 1 and {MAX_TOKEN_TIMEOUT_MS}"),
        ));
    }
    if !(1..=MAX_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER)
        .contains(&raw.max_exchanges_in_flight_per_worker)
    {
        p.0.push(ConfigError::new(
            "max_exchanges_in_flight_per_worker",
            format!("must be between 1 and {MAX_MAX_EXCHANGES_IN_FLIGHT_PER_WORKER}"),
        ));
    }
    if !(1..=MAX_MAX_ENTRIES).contains(&raw.cache.max_entries) {
        p.0.push(ConfigError::new(
            "cache.max_entries",
            format!("must be between 1 and {MAX_MAX_ENTRIES}"),
        ));
    }
    for (field, value, max) in [
        (
            "cache.expiry_skew_s",
            raw.cache.expiry_skew_s,
            MAX_EXPIRY_SKEW_S,
        ),
        (
            "cache.worker_entries",
            u64::from(raw.cache.worker_entries),
            MAX_WORKER_ENTRIES,
        ),
        ("cache.refresh_ahead_s", raw.cache.refresh_ahead_s, 86_400),
        (
            "cache.refresh_ahead_percent",
            raw.cache.refresh_ahead_percent,
            90,
        ),
        (
            "cache.claims_challenge_holdoff_s",
            raw.cache.claims_challenge_holdoff_s,
            MAX_CLAIMS_CHALLENGE_HOLDOFF_S,
        ),
        (
            "subject_token_leeway_s",
            raw.subject_token_leeway_s,
            MAX_SUBJECT_TOKEN_LEEWAY_S,
        ),
        (
            "negative_cache_s",
            raw.negative_cache_s,
            MAX_NEGATIVE_CACHE_S,
        ),
        ("backoff.default_s", raw.backoff.default_s, MAX_BACKOFF_S),
        ("backoff.max_s", raw.backoff.max_s, MAX_BACKOFF_S),
    ] {
        if value > max {
            p.0.push(ConfigError::new(field, format!("must be at most {max}")));
        }
    }
    if raw.targets.is_empty() {
        p.0.push(ConfigError::new("targets", "must list at least one target"));
    }
    let mut targets = Vec::with_capacity(raw.targets.len());
    for (i, t) in raw.targets.into_iter().enumerate() {
        if let Some(t) = validate_target(i, t, &names, &mut p) {
            targets.push(t);
        }
    }
    let config = Config {
        providers,
        token_timeout: Duration::from_millis(raw.token_timeout_ms),
        reads_route_cluster: targets.iter().any(|t| t.cluster.is_some()),
        targets,
        unmatched: raw.unmatched,
        envoy_normalizes_paths: raw.envoy_normalizes_paths,
        max_exchanges_in_flight_per_worker: raw.max_exchanges_in_flight_per_worker,
        cache: CacheSettings {
            max_entries: raw.cache.max_entries,
            expiry_skew_s: raw.cache.expiry_skew_s,
            worker_entries: raw.cache.worker_entries,
            refresh_ahead_s: raw.cache.refresh_ahead_s,
            refresh_ahead_percent: raw.cache.refresh_ahead_percent,
            claims_challenge_holdoff_s: raw.cache.claims_challenge_holdoff_s,
        },
        subject_token: SubjectTokenSettings {
            leeway_s: raw.subject_token_leeway_s,
        },
        negative_cache_s: raw.negative_cache_s,
        backoff: BackoffSettings {
            default_s: raw.backoff.default_s,
            max_s: raw.backoff.max_s,
        },
    };
    p.into_result(Some(config))
}

fn push(providers: &mut Vec<Provider>, provider: Provider) -> usize {
    providers.push(provider);
    providers.len() - 1
}

fn validate_target(
    index: usize,
    raw: RawTarget,
    names: &[(String, Option<usize>, Grant)],
    p: &mut Problems,
) -> Option<Target> {
    let field = |name: &str| format!("targets[{index}].{name}");
    if raw.host.is_none() && raw.cluster.is_none() {
        p.0.push(ConfigError::new(
            format!("targets[{index}]"),
            "needs host or cluster (or both): where its token may go",
        ));
    }
    let host = p.check(match &raw.host {
        None => Ok(None),
        Some(host) => HostPattern::parse(host)
            .map(Some)
            .map_err(|e| ConfigError::new(field("host"), e)),
    });
    let cluster = p.check(match &raw.cluster {
        None => Ok(None),
        Some(cluster) => ClusterPattern::parse(cluster)
            .map(Some)
            .map_err(|e| ConfigError::new(field("cluster"), e)),
    });
    let path_prefix = p.check(match raw.path_prefix {
        None => Ok(None),
        Some(prefix) if !prefix.starts_with('/') => Err(ConfigError::new(
            field("path_prefix"),
            "must start with '/'",
        )),
        Some(prefix) if prefix.chars().any(|c| c.is_whitespace() || c.is_control()) => {
            Err(ConfigError::new(
                field("path_prefix"),
                "must not contain spaces or control characters",
            ))
        }
        Some(prefix) => Ok(Some(prefix)),
    });
    let wanted = raw.provider.as_deref().unwrap_or("default");
    // An invalid provider's problems are reported already; its grant still decides the rest.
    let (provider, grant) = match names.iter().find(|(name, _, _)| name == wanted) {
        Some((_, index, grant)) => (*index, Some(*grant)),
        None => {
            p.0.push(ConfigError::new(
                field("provider"),
                format!("no provider is named {wanted:?}"),
            ));
            (None, None)
        }
    };
    // The scope for on_behalf_of and client_credentials, the audience for token_exchange.
    let resource = match (grant, raw.scope, raw.audience) {
        (None, _, _) => None,
        (Some(Grant::TokenExchange), None, Some(audience)) => {
            p.check(non_empty(&field("audience"), audience))
        }
        (Some(Grant::TokenExchange), _, _) => {
            p.0.push(ConfigError::new(
                field("audience"),
                "is required (and scope is not used) with the token_exchange grant",
            ));
            None
        }
        (Some(_), Some(scope), None) => p.check(non_empty(&field("scope"), scope)),
        (Some(g), _, _) => {
            p.0.push(ConfigError::new(
                field("scope"),
                format!(
                    "is required (and audience is not used) with the {} grant",
                    g.name()
                ),
            ));
            None
        }
    };
    let indicators = resource_indicators(&field("resource"), raw.resource, grant, p);
    if raw.host.is_none() && raw.cluster.is_none() {
        return None;
    }
    Some(Target {
        host: host?,
        cluster: cluster?,
        path_prefix: path_prefix?,
        provider: provider?,
        resource: resource?,
        indicators: indicators?,
    })
}

/// `resource` (RFC 8707): absolute URIs without a fragment, for the grants that take them.
fn resource_indicators(
    field: &str,
    raw: Option<Value>,
    grant: Option<Grant>,
    p: &mut Problems,
) -> Option<Vec<String>> {
    let Some(raw) = raw else {
        return Some(Vec::new());
    };
    if grant == Some(Grant::OnBehalfOf) {
        p.0.push(ConfigError::new(
            field,
            "applies to the token_exchange and client_credentials grants: Entra ID's on-behalf-of names the API by scope",
        ));
        return None;
    }
    let items = match raw {
        Value::String(uri) => vec![Value::String(uri)],
        Value::Array(items) if !items.is_empty() => items,
        _ => {
            p.0.push(ConfigError::new(
                field,
                "must be a URI, or a non-empty list of URIs",
            ));
            return None;
        }
    };
    let mut uris = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_str().filter(|uri| is_absolute_uri(uri)) {
            Some(uri) => uris.push(uri.to_string()),
            None => p.0.push(ConfigError::new(
                format!("{field}[{i}]"),
                format!(
                    "must be an absolute URI without a #fragment (RFC 8707), such as https://mcp.example.com/, not {}",
                    json::described(item)
                ),
            )),
        }
    }
    (uris.len() == items.len()).then_some(uris)
}

/// `scheme:rest`, the scheme a letter then letters, digits, `+`, `-` or `.`; no fragment, no space.
pub(super) fn is_absolute_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !text.contains('#')
        && !text.chars().any(|c| c.is_whitespace() || c.is_control())
}
