//! One request's way through the filter: match a target, take the bearer token, serve it from the
//! cache or join an exchange, and forward or refuse.

use std::cell::RefCell;
use std::rc::Rc;

use crate::backoff;
use crate::cache_key::CacheKey;
use crate::claims_challenge;
use crate::config::{ExistingAuthorization, Unmatched};
use crate::drop_signal;
use crate::error_reply::{log_line, reply_for, send_reply, Refusal};
use crate::exchange::{CallAnswer, ExchangeParams, Worker};
use crate::host::{Host, LogLevel};
use crate::metrics::Counter;
use crate::subject_token::{
    self, bearer_part, token_text, Accepted, SubjectTokenProblem, MAX_SUBJECT_TOKEN_BYTES,
};
use crate::target_match::{find_target, Match, RequestRoute};
use crate::token_cache::{Cached, TokenCache};
use crate::token_response::ExchangeFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the request (as it is now).
    Continue,
    /// Hold it: it waits for an exchange, or it was answered locally.
    Pause,
}

pub struct RequestFilter {
    context_id: u32,
    worker: Rc<RefCell<Worker>>,
    waiting_on: Option<CacheKey>,
    /// The key whose token this request was sent on with, to drop it if the upstream asks for
    /// more claims.
    served_with: Option<CacheKey>,
}

impl RequestFilter {
    pub fn new(context_id: u32, worker: Rc<RefCell<Worker>>) -> Self {
        RequestFilter {
            context_id,
            worker,
            waiting_on: None,
            served_with: None,
        }
    }

    pub fn on_request_headers(&mut self, host: &dyn Host) -> Verdict {
        let mut worker = self.worker.borrow_mut();
        let Some(config) = worker.config() else {
            return refuse(host, &Refusal::NotConfigured);
        };
        let headers =
            host.request_headers(&[":authority", ":path", "authorization", "x-request-id"]);
        let authority = headers.text(0).unwrap_or_default();
        let path = headers.text(1).unwrap_or_default();
        // One more hostcall, made only when some target names a cluster.
        let cluster = config
            .reads_route_cluster
            .then(|| host.route_cluster())
            .flatten();
        let route = RequestRoute {
            authority: &authority,
            path: &path,
            cluster: cluster.as_deref(),
        };
        let (target_index, target) =
            match find_target(&config.targets, &route, config.envoy_normalizes_paths) {
                Match::Target(index, target) => (index, target),
                Match::Unmatched => {
                    return unmatched(host, config.unmatched, headers.bytes(2).is_some())
                }
                Match::MalformedAuthority => return refuse(host, &Refusal::MalformedAuthority),
                Match::AmbiguousPath => return refuse(host, &Refusal::AmbiguousPath),
            };
        // Targets name providers by an index checked when the configuration was loaded.
        let provider = &config.providers[target.provider];
        let grant = provider.grant;
        // The caller's token, or for client_credentials none (the application asks as itself).
        // Bytes as Envoy gave them: the front cache holds only tokens that passed `token_text`,
        // so a hit needs no check of its own.
        let subject: &[u8] = if grant.needs_subject_token() {
            let Some(subject) = headers.bytes(2).and_then(bearer_part) else {
                return refuse(host, &Refusal::NoBearerToken);
            };
            if subject.len() > MAX_SUBJECT_TOKEN_BYTES {
                return refuse(
                    host,
                    &Refusal::BadSubjectToken(SubjectTokenProblem::TooLarge),
                );
            }
            subject
        } else {
            match (headers.bytes(2).is_some(), provider.existing_authorization) {
                (true, ExistingAuthorization::Keep) => {
                    host.count(Counter::PassedThrough);
                    return Verdict::Continue;
                }
                (true, ExistingAuthorization::Refuse) => {
                    return refuse(host, &Refusal::AuthorizationPresent)
                }
                _ => b"",
            }
        };
        let now = host.now_unix();
        worker.catch_up_on_drops(host, now);
        let fingerprint = worker.front().fingerprint(target_index, subject);
        // What an exchange for this request is for; built only when one is needed.
        let params_for = |subject_token: &str, subject_exp: Option<u64>| ExchangeParams {
            provider: target.provider,
            grant,
            resource: target.resource.clone(),
            subject_token: subject_token.to_string(),
            subject_exp,
            target_host: authority.to_string(),
            request_id: headers.text(3).map(|id| id.into_owned()),
            fingerprint,
        };
        if let Some(entry) = worker.front().get(&fingerprint, now) {
            let key = entry.key;
            self.served_with = Some(key);
            host.count(Counter::CacheHits);
            if now < entry.refresh_at {
                host.set_request_header("authorization", &entry.authorization);
                return Verdict::Continue;
            }
            // In the refresh window. Another worker (or this one) may have refreshed it already:
            // then send its token and keep it, rather than start a refresh.
            let cached = entry.authorization.clone();
            let authorization = match TokenCache::new(config.cache.max_entries).get(host, &key, now)
            {
                Some(Cached::Token {
                    token,
                    until,
                    refresh_at,
                }) if refresh_at > now => {
                    let times = (until, refresh_at);
                    worker
                        .front()
                        .put_token(fingerprint, key, &token, times, now)
                }
                // The token passed `token_text` when its entry was made.
                _ => {
                    if let Some(subject_token) = token_text(subject) {
                        let params = params_for(subject_token, exp_of(subject_token));
                        worker.refresh(host, key, params);
                    }
                    cached
                }
            };
            host.set_request_header("authorization", &authorization);
            return Verdict::Continue;
        }
        // The front cache holds only tokens that passed this check; everything else is checked
        // here, before anything is derived from the token.
        let Some(subject_token) = token_text(subject) else {
            return refuse(host, &Refusal::NoBearerToken);
        };
        let key = CacheKey::derive(
            &provider.token_endpoint.url,
            &provider.client_id,
            grant.name(),
            &target.resource,
            subject_token,
        );
        match TokenCache::new(config.cache.max_entries).get(host, &key, now) {
            Some(Cached::Token {
                token,
                until,
                refresh_at,
            }) => {
                let times = (until, refresh_at);
                let authorization = worker
                    .front()
                    .put_token(fingerprint, key, &token, times, now);
                host.set_request_header("authorization", &authorization);
                host.count(Counter::CacheHits);
                host.count(Counter::CacheHitsShared);
                self.served_with = Some(key);
                if now >= refresh_at {
                    worker.refresh(host, key, params_for(subject_token, exp_of(subject_token)));
                }
                return Verdict::Continue;
            }
            Some(Cached::Rejected(error_json)) => {
                let refusal = Refusal::Exchange(ExchangeFailure::remembered(error_json.as_bytes()));
                return refuse(host, &refusal);
            }
            None => host.count(Counter::CacheMisses),
        }
        // Only a token that is not cached gets here, so these checks cost a cache hit nothing.
        let subject_exp = if grant.needs_subject_token() {
            let accepted = Accepted {
                audiences: provider.audiences.as_deref(),
                issuers: provider.allowed_issuers.as_deref(),
                tenants: provider.allowed_tenants.as_deref(),
            };
            match subject_token::check(subject_token, now, config.subject_token.leeway_s, &accepted)
            {
                Ok(claims) => claims.exp,
                Err(problem) => return refuse(host, &Refusal::BadSubjectToken(problem)),
            }
        } else {
            None
        };
        let backoff_key = backoff::scope_key(provider, &target.resource);
        if let Some(retry_after_s) = backoff::remaining_s(host, &backoff_key, host.now_ms()) {
            return refuse(host, &Refusal::BackingOff { retry_after_s });
        }
        match worker.join(
            host,
            self.context_id,
            key,
            params_for(subject_token, subject_exp),
        ) {
            Ok(()) => {
                self.waiting_on = Some(key);
                self.served_with = Some(key);
                Verdict::Pause
            }
            Err(refusal) => refuse(host, &refusal),
        }
    }

    /// Continuous access evaluation: an upstream that answers 401 (or gRPC `UNAUTHENTICATED`) with
    /// `error="insufficient_claims"` no longer accepts the cached token, so it is dropped and the
    /// next request exchanges again, unless this worker dropped that key's token within the
    /// holdoff (`claims_challenge`). The answer itself goes back to the caller unchanged.
    pub fn on_response_headers(&mut self, host: &dyn Host) {
        let Some(key) = self.served_with.take() else {
            return;
        };
        if !claims_challenge::from_upstream(host) {
            return;
        }
        let mut worker = self.worker.borrow_mut();
        if !worker.may_drop_for_challenge(key, host.now_unix()) {
            host.count(Counter::UpstreamClaimsChallengesKept);
            host.log(
                LogLevel::Debug,
                "upstream asked for more claims again within cache.claims_challenge_holdoff_s: cached token kept",
            );
            return;
        }
        worker.front().forget(&key);
        if let Some(config) = worker.config() {
            TokenCache::new(config.cache.max_entries).forget(host, &key);
            drop_signal::announce(host, &key);
            host.count(Counter::UpstreamClaimsChallenges);
            host.log(
                LogLevel::Info,
                "upstream asked for more claims (insufficient_claims): cached token dropped",
            );
        }
    }

    /// The answer to a token request this stream sent.
    pub fn on_token_answer(&mut self, host: &dyn Host, token_id: u32, answer: &CallAnswer) {
        self.waiting_on = None;
        self.worker
            .borrow_mut()
            .complete(host, token_id, answer, self.context_id);
    }

    /// The stream is gone: it no longer waits for an exchange (one it sent is re-sent from the
    /// root context if others still wait for it).
    pub fn on_end(&mut self, host: &dyn Host) {
        if let Some(key) = self.waiting_on.take() {
            self.worker.borrow_mut().leave(host, self.context_id, &key);
        }
    }
}

/// The subject token's `exp`, for a refresh (the token passed the checks when first exchanged).
fn exp_of(subject_token: &str) -> Option<u64> {
    subject_token::read_claims(subject_token)
        .ok()
        .and_then(|c| c.exp)
}

/// Envoy's mark on a request it is sending on after following an internal redirect.
const ORIGINAL_URL: &str = "x-envoy-original-url";

/// A request no target matched: nothing of the caller's goes on unless `unmatched` says so, and
/// nothing at all once Envoy followed a redirect (the `Authorization` may be a target's token,
/// and a client drops credentials on a redirect to another host too).
fn unmatched(host: &dyn Host, policy: Unmatched, has_authorization: bool) -> Verdict {
    let policy = match policy {
        Unmatched::Passthrough
            if has_authorization && host.request_header(ORIGINAL_URL).is_some() =>
        {
            Unmatched::Strip
        }
        policy => policy,
    };
    match policy {
        Unmatched::Strip if has_authorization => {
            host.remove_request_header("authorization");
            host.count(Counter::UnmatchedStripped);
            Verdict::Continue
        }
        Unmatched::Strip | Unmatched::Passthrough => {
            host.count(Counter::PassedThrough);
            Verdict::Continue
        }
        Unmatched::Deny => refuse(host, &Refusal::UnmatchedDenied),
    }
}

fn refuse(host: &dyn Host, refusal: &Refusal) -> Verdict {
    host.count(Counter::RejectedLocally);
    host.log(LogLevel::Info, &log_line(refusal));
    send_reply(host, &reply_for(refusal));
    Verdict::Pause
}

#[cfg(test)]
mod tests;
