//! What an answer leaves behind: the token cached, a refusal remembered, a backoff, or one retry.

use crate::backoff;
use crate::cache_key::CacheKey;
use crate::config::{Config, Grant};
use crate::error_reply::{log_line, sanitize_for_log, sanitize_for_log_with, Refusal};
use crate::host::{Host, LogLevel};
use crate::metrics::Counter;
use crate::token_cache::{refresh_at, use_until, TokenCache};
use crate::token_response::{ExchangeFailure, IssuedToken};

use super::{Exchange, ExchangeParams, MIN_RETRY_BUDGET_MS};

/// Once, for a reset, an unreachable IdP or a 5xx (never a 4xx), within the time budget; jittered
/// per key so that many failed exchanges do not come back at the same instant.
pub(super) fn retry_at(
    host: &dyn Host,
    key: &CacheKey,
    exchange: &Exchange,
    failure: &ExchangeFailure,
) -> Option<u64> {
    let retryable = match failure {
        ExchangeFailure::Unreachable | ExchangeFailure::Timeout => true,
        ExchangeFailure::IdpError { status, .. } => *status >= 500,
        _ => false,
    };
    if !retryable || exchange.attempts >= 2 {
        return None;
    }
    let now_ms = host.now_ms();
    let jitter_ms = 20 + (u64::from(key.0[8]) ^ now_ms) % 100;
    let due_ms = now_ms + jitter_ms;
    (exchange.deadline_ms.saturating_sub(due_ms) >= MIN_RETRY_BUDGET_MS).then_some(due_ms)
}

pub(super) fn record_outcome(host: &dyn Host, outcome: Counter, exchange: &Exchange) {
    host.count(outcome);
    host.record_exchange_latency_ms(host.now_ms().saturating_sub(exchange.started_ms));
}

/// Caches the issued token; returns until when it is used and from when refreshed, if it is.
pub(super) fn store(
    host: &dyn Host,
    config: &Config,
    cache: TokenCache,
    key: &CacheKey,
    exchange: &Exchange,
    issued: &IssuedToken,
) -> Option<(u64, u64)> {
    let now = host.now_unix();
    let skew = config.cache.expiry_skew_s;
    match use_until(now, issued.expires_in, skew, exchange.params.subject_exp) {
        Some(until) => {
            let settings = &config.cache;
            let refresh = refresh_at(
                now,
                until,
                settings.refresh_ahead_s,
                settings.refresh_ahead_percent,
            );
            cache.put(host, key, &issued.access_token, until, refresh);
            host.log(
                LogLevel::Debug,
                &format!(
                    "scope {}: token exchanged, cached for {} s",
                    exchange.params.resource,
                    until - now
                ),
            );
            Some((until, refresh))
        }
        None => {
            host.log(
                LogLevel::Debug,
                &format!(
                    "scope {}: token exchanged, too short-lived to cache",
                    exchange.params.resource
                ),
            );
            None
        }
    }
}

/// An `invalid_grant` or claims challenge is remembered for this subject token and scope, since
/// Entra ID answers the same token the same way; throttling and server failures back off.
pub(super) fn remember_failure(
    host: &dyn Host,
    config: &Config,
    cache: TokenCache,
    key: &CacheKey,
    exchange: &Exchange,
    failure: &ExchangeFailure,
    backoff_s: Option<u64>,
) {
    if let ExchangeFailure::InvalidGrant(idp) | ExchangeFailure::ClaimsChallenge(idp) = failure {
        if config.negative_cache_s > 0 {
            if let Ok(json) = serde_json::to_string(idp) {
                let until = host.now_unix().saturating_add(config.negative_cache_s);
                cache.put_rejection(host, key, &json, until);
            }
        }
    }
    if let Some(wait_s) = backoff_s {
        backoff::start(
            host,
            &exchange.params.backoff_key(config),
            host.now_ms(),
            wait_s,
        );
    }
}

/// Not a timeout, a reset, or Envoy's own refusal.
pub(super) fn came_from_the_endpoint(failure: &ExchangeFailure) -> bool {
    !matches!(
        failure,
        ExchangeFailure::Timeout | ExchangeFailure::Unreachable | ExchangeFailure::RefusedByEnvoy
    )
}

pub(super) fn is_invalid_client(failure: &ExchangeFailure) -> bool {
    matches!(failure, ExchangeFailure::IdpError { idp: Some(idp), .. } if idp.error == "invalid_client")
}

/// What the IdP said (`log_line`), with the grant, scope, host and request id that began it.
pub(super) fn exchange_log_line(refusal: &Refusal, params: &ExchangeParams) -> String {
    let resource = match params.grant {
        Grant::TokenExchange => "audience",
        Grant::OnBehalfOf | Grant::ClientCredentials => "scope",
    };
    // The tenant, never the user: which tenant struggles.
    let tenant = match &params.tenant {
        Some(tenant) => format!(" tenant={}", sanitize_for_log(tenant)),
        None => String::new(),
    };
    format!(
        "token exchange failed: grant={}{tenant} {resource}={} host={} request_id={}: {}",
        params.grant.name(),
        sanitize_for_log_with(&params.resource, ":/"),
        sanitize_for_log_with(&params.target_host, ":"),
        sanitize_for_log(params.request_id.as_deref().unwrap_or("-")),
        log_line(refusal)
    )
}
