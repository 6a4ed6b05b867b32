//! A token request's answer: every waiting request resumed or refused, and what it leaves behind
//! (the token cached, a refusal remembered, a backoff), or the one retry scheduled.

use crate::backoff;
use crate::cache_key::CacheKey;
use crate::config::{Config, Grant};
use crate::error_reply::{log_line, sanitize_for_log, sanitize_for_log_with, Refusal};
use crate::host::{Host, LogLevel};
use crate::metrics::Counter;
use crate::token_cache::{refresh_at, use_until, TokenCache};
use crate::token_response::{ExchangeFailure, IssuedToken};

use super::actor::ActorToken;
use super::{
    finish, CallAnswer, Exchange, ExchangeParams, Outcome, Worker, MIN_RETRY_BUDGET_MS,
    REFRESH_RETRY_S, TICK_MS,
};
use crate::error_reply::reply_for;
use crate::lease;
use crate::token_response::{read_answer, refused_by_envoy};

/// Once, for a reset, an unreachable IdP or a 5xx (never a 4xx), within the time budget; jittered
/// per key so that many failed exchanges do not come back at the same instant.
fn retry_at(
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

fn record_outcome(host: &dyn Host, outcome: Counter, exchange: &Exchange) {
    match outcome {
        Counter::ExchangesOk => host.count(outcome),
        failed => host.count_failed_exchange(failed, exchange.params.tenant.as_deref()),
    }
    host.record_exchange_latency_ms(host.now_ms().saturating_sub(exchange.started_ms));
}

/// Caches the issued token; returns until when it is used and from when refreshed, if it is.
fn store(
    host: &dyn Host,
    config: &Config,
    cache: TokenCache,
    key: &CacheKey,
    exchange: &Exchange,
    issued: &IssuedToken,
) -> Option<(u64, u64)> {
    let now = host.now_unix();
    let skew = config.cache.expiry_skew_s;
    match use_until(
        now,
        issued.expires_in,
        skew,
        exchange.params.use_no_later_than(),
    ) {
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
fn remember_failure(
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
fn came_from_the_endpoint(failure: &ExchangeFailure) -> bool {
    !matches!(
        failure,
        ExchangeFailure::Timeout | ExchangeFailure::Unreachable | ExchangeFailure::RefusedByEnvoy
    )
}

fn is_invalid_client(failure: &ExchangeFailure) -> bool {
    matches!(failure, ExchangeFailure::IdpError { idp: Some(idp), .. } if idp.error == "invalid_client")
}

/// What the IdP said (`log_line`), with the grant, scope, host and request id that began it.
fn exchange_log_line(refusal: &Refusal, params: &ExchangeParams) -> String {
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

impl Worker {
    /// Settles the exchange, or schedules its one retry; `current` is the context acted for now.
    pub fn complete(&mut self, host: &dyn Host, token_id: u32, answer: &CallAnswer, current: u32) {
        if let Some(index) = self
            .fetched
            .iter()
            .position(|f| f.fetching == Some(token_id))
        {
            return self.assertion_answer(host, index, answer, current);
        }
        // A scan over this worker's exchanges in flight (tens usually, a few thousand in a burst
        // of new users): a map from token id would cost the .wasm another copy of the hash map.
        let Some(key) = self
            .exchanges
            .iter()
            .find(|(_, f)| f.call == Some(token_id))
            .map(|(key, _)| *key)
        else {
            return;
        };
        let Some(mut exchange) = self.exchanges.remove(&key) else {
            return;
        };
        let Some(config) = self.config.clone() else {
            let reply = reply_for(&Refusal::NotConfigured);
            finish(host, &exchange.waiters, &Outcome::Refuse(reply.clone()));
            self.settle_dependents(host, exchange.dependents, Err(&reply));
            host.switch_to(current);
            return;
        };
        let outcome = if refused_by_envoy(answer.status, answer.overloaded, &answer.body) {
            Err(ExchangeFailure::RefusedByEnvoy)
        } else {
            read_answer(answer.status, answer.retry_after.as_deref(), &answer.body)
        };
        if outcome.as_ref().err().is_none_or(came_from_the_endpoint) {
            if let Some(answered) = self.answered_ms.get_mut(exchange.params.provider) {
                *answered = host.now_ms();
            }
        }
        let mut issued_actor = None;
        let outcome = match outcome {
            Ok(issued) => {
                record_outcome(host, Counter::ExchangesOk, &exchange);
                // In the shared cache before the lease ends, so no waiter misses it.
                let times = store(host, &config, self.cache, &key, &exchange, &issued);
                lease::release(host, &key, self.cache.slots(), self.id);
                let (token, now) = (&issued.access_token, host.now_unix());
                // Until when the exchanges waiting for it as their actor token may use it.
                let until = times.map_or(now, |(until, _)| until);
                issued_actor = Some(ActorToken::new(token, until));
                match (times, exchange.params.fingerprint) {
                    (Some(times), Some(fingerprint)) => {
                        let subject = exchange.params.subject_token.as_bytes();
                        let authorization =
                            self.front
                                .put_token(fingerprint, subject, key, token, times, now);
                        Outcome::Forward(authorization.to_string())
                    }
                    _ => Outcome::Forward(format!("Bearer {token}")),
                }
            }
            Err(failure) => {
                if is_invalid_client(&failure) {
                    match self.after_invalid_client(host, &config, key, exchange) {
                        Some(refused) => exchange = refused,
                        None => return,
                    }
                }
                if let Some(due_ms) = retry_at(host, &key, &exchange, &failure) {
                    let refusal = Refusal::Exchange(failure);
                    host.log(
                        LogLevel::Info,
                        &format!(
                            "retrying once: {}",
                            exchange_log_line(&refusal, &exchange.params)
                        ),
                    );
                    exchange.sender = None;
                    exchange.call = None;
                    self.exchanges.insert(key, exchange);
                    self.pending.push((key, due_ms));
                    host.set_tick_period_ms(TICK_MS);
                    return;
                }
                record_outcome(host, Counter::for_failure(&failure), &exchange);
                let backoff_s = self.backoff_for(&failure, &exchange, &config);
                if exchange.background {
                    // Keep serving the cached token; try again a little later.
                    let now = host.now_unix();
                    self.cache
                        .postpone_refresh(host, &key, now + REFRESH_RETRY_S, now);
                    if let Some(wait_s) = backoff_s {
                        let scope_key = exchange.params.backoff_key(&config);
                        backoff::start(host, &scope_key, host.now_ms(), wait_s);
                    }
                } else {
                    let cache = self.cache;
                    remember_failure(host, &config, cache, &key, &exchange, &failure, backoff_s);
                }
                lease::release(host, &key, self.cache.slots(), self.id);
                let refusal = Refusal::Exchange(failure);
                host.log(
                    LogLevel::Warn,
                    &exchange_log_line(&refusal, &exchange.params),
                );
                Outcome::Refuse(reply_for(&refusal))
            }
        };
        finish(host, &exchange.waiters, &outcome);
        let dependents = std::mem::take(&mut exchange.dependents);
        match (&outcome, issued_actor) {
            (Outcome::Refuse(reply), _) => self.settle_dependents(host, dependents, Err(reply)),
            (Outcome::Forward(_), Some(actor)) => {
                self.settle_dependents(host, dependents, Ok(actor))
            }
            (Outcome::Forward(_), None) => {}
        }
        host.switch_to(current);
    }

    /// Not for a timeout while the endpoint answered this worker's other token requests: that time
    /// went in Envoy's queue, not at Entra ID, and backing off would refuse every new user.
    fn backoff_for(
        &self,
        failure: &ExchangeFailure,
        exchange: &Exchange,
        config: &Config,
    ) -> Option<u64> {
        let answered_ms = self
            .answered_ms
            .get(exchange.params.provider)
            .copied()
            .unwrap_or(0);
        if matches!(failure, ExchangeFailure::Timeout) && answered_ms > exchange.started_ms {
            return None;
        }
        backoff::wait_for(failure, &config.backoff)
    }
}
