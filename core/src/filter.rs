//! One request's way through the filter, from matching a target to forwarding or refusing it.

use std::cell::RefCell;
use std::rc::Rc;

use crate::backoff;
use crate::cache_key::CacheKey;
use crate::claims_challenge;
use crate::config::{Config, ExistingAuthorization, Provider, Unmatched};
use crate::drop_signal;
use crate::error_reply::{log_line, reply_for, send_reply, Refusal};
use crate::exchange::{CallAnswer, ExchangeParams, Worker};
use crate::front_cache::Fingerprint;
use crate::host::{HeaderValues, Host, LogLevel};
use crate::metrics::Counter;
use crate::subject_token::{
    self, bearer_part, token_text, Accepted, SubjectTokenProblem, MAX_SUBJECT_TOKEN_BYTES,
};
use crate::target_match::{find_target, Match, RequestRoute, Target};
use crate::token_cache::Cached;
use crate::token_response::ExchangeFailure;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Forward the request (as it is now).
    Continue,
    /// Hold it: it waits for an exchange, or it was answered locally.
    Pause,
}

/// How a request reaches its worker's state: a Wasm VM's one thread owns it
/// (`Rc<RefCell<Worker>>`); a native module's threads share one behind a lock.
pub trait WorkerHandle {
    fn with<R>(&self, f: impl FnOnce(&mut Worker) -> R) -> R;
}

impl WorkerHandle for Rc<RefCell<Worker>> {
    fn with<R>(&self, f: impl FnOnce(&mut Worker) -> R) -> R {
        f(&mut self.borrow_mut())
    }
}

pub struct RequestFilter<W: WorkerHandle = Rc<RefCell<Worker>>> {
    context_id: u32,
    worker: W,
    waiting_on: Option<CacheKey>,
    /// The key whose token the request was sent with, to drop if the upstream asks for more claims.
    served_with: Option<CacheKey>,
}

impl<W: WorkerHandle> RequestFilter<W> {
    pub fn new(context_id: u32, worker: W) -> Self {
        RequestFilter {
            context_id,
            worker,
            waiting_on: None,
            served_with: None,
        }
    }

    pub fn on_request_headers(&mut self, host: &dyn Host) -> Verdict {
        let context_id = self.context_id;
        match self
            .worker
            .with(|worker| handle_request(host, worker, context_id))
        {
            Ok(Handled::Forwarded) => Verdict::Continue,
            Ok(Handled::Served(key)) => {
                self.served_with = Some(key);
                Verdict::Continue
            }
            Ok(Handled::Waiting(key)) => {
                self.waiting_on = Some(key);
                self.served_with = Some(key);
                Verdict::Pause
            }
            Err(refusal) => refuse(host, &refusal),
        }
    }

    /// An upstream's claims challenge drops the cached token (not within the holdoff).
    pub fn on_response_headers(&mut self, host: &dyn Host) {
        let Some(key) = self.served_with.take() else {
            return;
        };
        if !claims_challenge::from_upstream(host) {
            return;
        }
        self.worker
            .with(|worker| drop_for_challenge(host, worker, key));
    }

    pub fn on_token_answer(&mut self, host: &dyn Host, token_id: u32, answer: &CallAnswer) {
        self.waiting_on = None;
        let context_id = self.context_id;
        self.worker
            .with(|worker| worker.complete(host, token_id, answer, context_id));
    }

    /// The stream is gone: an exchange it sent is re-sent from the root if others still wait.
    pub fn on_end(&mut self, host: &dyn Host) {
        if let Some(key) = self.waiting_on.take() {
            let context_id = self.context_id;
            self.worker
                .with(|worker| worker.leave(host, context_id, &key));
        }
    }
}

/// Not within the holdoff: see `cache.claims_challenge_holdoff_s`.
fn drop_for_challenge(host: &dyn Host, worker: &mut Worker, key: CacheKey) {
    if !worker.may_drop_for_challenge(key, host.now_unix()) {
        host.count(Counter::UpstreamClaimsChallengesKept);
        host.log(
                LogLevel::Debug,
                "upstream asked for more claims again within cache.claims_challenge_holdoff_s: cached token kept",
            );
        return;
    }
    worker.front().forget(&key);
    if worker.config().is_some() {
        worker.shared_cache().forget(host, &key);
        drop_signal::announce(host, &key);
        host.count(Counter::UpstreamClaimsChallenges);
        host.log(
            LogLevel::Info,
            "upstream asked for more claims (insufficient_claims): cached token dropped",
        );
    }
}

enum Handled {
    /// Sent on as it is (no target, or a token of the application's own kept).
    Forwarded,
    Served(CacheKey),
    Waiting(CacheKey),
}

struct Matched<'a> {
    config: &'a Config,
    target: &'a Target,
    provider: &'a Provider,
    headers: &'a HeaderValues,
    authority: &'a str,
    fingerprint: Fingerprint,
    now: u64,
}

/// The request headers the filter reads, in the worker's buffer, which goes back to it after.
fn handle_request(
    host: &dyn Host,
    worker: &mut Worker,
    context_id: u32,
) -> Result<Handled, Refusal> {
    let mut headers = worker.take_header_buffer();
    let names = [":authority", ":path", "authorization", "x-request-id"];
    host.request_headers(&names, &mut headers);
    let handled = handle_headers(host, worker, context_id, &headers);
    worker.keep_header_buffer(headers);
    handled
}

/// One request's way, step by step as the design document's "Where things are" tells it.
fn handle_headers(
    host: &dyn Host,
    worker: &mut Worker,
    context_id: u32,
    headers: &HeaderValues,
) -> Result<Handled, Refusal> {
    let config = worker.config().ok_or(Refusal::NotConfigured)?;
    let authority = headers.text(0).unwrap_or_default();
    let Some((target_index, target)) = match_target(host, &config, headers, &authority)? else {
        return unmatched(host, config.unmatched, headers.bytes(2).is_some());
    };
    // Targets name providers by an index checked when the configuration was loaded.
    let provider = &config.providers[target.provider];
    let Some(subject) = take_subject_token(host, provider, headers.bytes(2))? else {
        return Ok(Handled::Forwarded);
    };
    let now = host.now_unix();
    worker.catch_up_on_drops(host, now);
    let request = Matched {
        config: &config,
        target,
        provider,
        headers,
        authority: &authority,
        fingerprint: worker.front().fingerprint(target_index, subject),
        now,
    };
    if let Some(key) = request.serve_from_worker_cache(host, worker, subject) {
        return Ok(Handled::Served(key));
    }
    // The worker's cache holds only tokens that passed this check; everything else is checked
    // here, before anything is derived from the token.
    let subject_token = token_text(subject).ok_or(Refusal::NoBearerToken)?;
    let key = CacheKey::derive(
        &provider.token_endpoint.url,
        provider.key_client(),
        provider.grant.name(),
        &target.key_resource(),
        subject_token,
    );
    if request.serve_from_shared_cache(host, worker, subject_token, key)? {
        return Ok(Handled::Served(key));
    }
    request.join_or_start_exchange(host, worker, context_id, subject_token, key)
}

fn match_target<'c>(
    host: &dyn Host,
    config: &'c Config,
    headers: &HeaderValues,
    authority: &str,
) -> Result<Option<(usize, &'c Target)>, Refusal> {
    let path = headers.text(1).unwrap_or_default();
    // One more hostcall, made only when some target names a cluster.
    let cluster = config
        .reads_route_cluster
        .then(|| host.route_cluster())
        .flatten();
    let route = RequestRoute {
        authority,
        path: &path,
        cluster: cluster.as_deref(),
    };
    match find_target(&config.targets, &route, config.envoy_normalizes_paths) {
        Match::Target(index, target) => Ok(Some((index, target))),
        Match::Unmatched => Ok(None),
        Match::MalformedAuthority => Err(Refusal::MalformedAuthority),
        Match::AmbiguousPath => Err(Refusal::AmbiguousPath),
    }
}

/// The caller's token, unchecked: the worker's cache holds only tokens that passed `token_text`.
/// `client_credentials` has none: empty, or None when the request keeps its `Authorization`.
fn take_subject_token<'h>(
    host: &dyn Host,
    provider: &Provider,
    authorization: Option<&'h [u8]>,
) -> Result<Option<&'h [u8]>, Refusal> {
    if provider.grant.needs_subject_token() {
        let subject = authorization
            .and_then(bearer_part)
            .ok_or(Refusal::NoBearerToken)?;
        if subject.len() > MAX_SUBJECT_TOKEN_BYTES {
            return Err(Refusal::BadSubjectToken(SubjectTokenProblem::TooLarge));
        }
        return Ok(Some(subject));
    }
    match (authorization.is_some(), provider.existing_authorization) {
        (true, ExistingAuthorization::Keep) => {
            host.count(Counter::PassedThrough);
            Ok(None)
        }
        (true, ExistingAuthorization::Refuse) => Err(Refusal::AuthorizationPresent),
        _ => Ok(Some(b"")),
    }
}

impl Matched<'_> {
    /// What an exchange for this request is for; built only when one is needed.
    fn exchange_params(&self, subject_token: &str, claims: Subject) -> ExchangeParams {
        let tenant = claims
            .tid
            .filter(|_| self.provider.token_endpoint.per_tenant)
            .map(|tid| tid.to_ascii_lowercase());
        let subject_exp = claims.exp;
        ExchangeParams {
            provider: self.target.provider,
            grant: self.provider.grant,
            resource: self.target.resource.clone(),
            indicators: self.target.indicators.clone(),
            subject_token: subject_token.to_string(),
            subject_exp,
            target_host: self.authority.to_string(),
            request_id: self.headers.text(3).map(|id| id.into_owned()),
            fingerprint: Some(self.fingerprint),
            tenant,
            actor: None,
        }
    }

    /// The hot path; in the refresh window, a refreshed token from the shared cache or a refresh.
    fn serve_from_worker_cache(
        &self,
        host: &dyn Host,
        worker: &mut Worker,
        subject: &[u8],
    ) -> Option<CacheKey> {
        let (fingerprint, now) = (self.fingerprint, self.now);
        let entry = worker.front().get(&fingerprint, subject, now)?;
        let key = entry.key;
        host.count(Counter::CacheHits);
        if now < entry.refresh_at {
            host.set_request_header("authorization", &entry.authorization);
            return Some(key);
        }
        let cached = entry.authorization.clone();
        let authorization = match worker.shared_cache().get(host, &key, now) {
            Some(Cached::Token {
                token,
                until,
                refresh_at,
            }) if refresh_at > now => {
                let times = (until, refresh_at);
                worker
                    .front()
                    .put_token(fingerprint, subject, key, &token, times, now)
            }
            // The token passed `token_text` when its entry was made.
            _ => {
                if let Some(subject_token) = token_text(subject) {
                    let params = self.exchange_params(subject_token, claims_of(subject_token));
                    worker.refresh(host, key, params);
                }
                cached
            }
        };
        host.set_request_header("authorization", &authorization);
        Some(key)
    }

    /// True when the request goes on with a token; a refusal remembered for it is given again.
    fn serve_from_shared_cache(
        &self,
        host: &dyn Host,
        worker: &mut Worker,
        subject_token: &str,
        key: CacheKey,
    ) -> Result<bool, Refusal> {
        let now = self.now;
        match worker.shared_cache().get(host, &key, now) {
            Some(Cached::Token {
                token,
                until,
                refresh_at,
            }) => {
                let times = (until, refresh_at);
                let authorization = worker.front().put_token(
                    self.fingerprint,
                    subject_token.as_bytes(),
                    key,
                    &token,
                    times,
                    now,
                );
                host.set_request_header("authorization", &authorization);
                host.count(Counter::CacheHits);
                host.count(Counter::CacheHitsShared);
                if now >= refresh_at {
                    let params = self.exchange_params(subject_token, claims_of(subject_token));
                    worker.refresh(host, key, params);
                }
                Ok(true)
            }
            Some(Cached::Rejected(error_json)) => Err(Refusal::Exchange(
                ExchangeFailure::remembered(error_json.as_bytes()),
            )),
            None => {
                host.count(Counter::CacheMisses);
                Ok(false)
            }
        }
    }

    /// The subject token's checks (here, so a hit pays none), the backoff, then the exchange.
    fn join_or_start_exchange(
        &self,
        host: &dyn Host,
        worker: &mut Worker,
        context_id: u32,
        subject_token: &str,
        key: CacheKey,
    ) -> Result<Handled, Refusal> {
        let provider = self.provider;
        let claims = if provider.grant.needs_subject_token() {
            let accepted = Accepted {
                audiences: provider.audiences.as_deref(),
                issuers: provider.allowed_issuers.as_deref(),
                tenants: provider.allowed_tenants.as_deref(),
            };
            let leeway_s = self.config.subject_token.leeway_s;
            let claims = subject_token::check(subject_token, self.now, leeway_s, &accepted)
                .map_err(Refusal::BadSubjectToken)?;
            Subject {
                exp: claims.exp,
                tid: claims.tid,
            }
        } else {
            Subject::default()
        };
        let params = self.exchange_params(subject_token, claims);
        let backoff_key = params.backoff_key_of(provider);
        if let Some(retry_after_s) = backoff::remaining_s(host, &backoff_key, host.now_ms()) {
            return Err(Refusal::BackingOff { retry_after_s });
        }
        worker.join(host, context_id, key, params)?;
        Ok(Handled::Waiting(key))
    }
}

/// What an exchange keeps of the subject token's claims.
#[derive(Default)]
struct Subject {
    exp: Option<u64>,
    tid: Option<String>,
}

/// The subject token's claims, for a refresh (the token passed the checks when first exchanged).
fn claims_of(subject_token: &str) -> Subject {
    subject_token::read_claims(subject_token)
        .map(|c| Subject {
            exp: c.exp,
            tid: c.tid,
        })
        .unwrap_or_default()
}

/// Envoy's mark on a request it is sending on after following an internal redirect.
const ORIGINAL_URL: &str = "x-envoy-original-url";

/// Never `Authorization` after an internal redirect, whatever `unmatched`: it may be a target's.
fn unmatched(
    host: &dyn Host,
    policy: Unmatched,
    has_authorization: bool,
) -> Result<Handled, Refusal> {
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
            Ok(Handled::Forwarded)
        }
        Unmatched::Strip | Unmatched::Passthrough => {
            host.count(Counter::PassedThrough);
            Ok(Handled::Forwarded)
        }
        Unmatched::Deny => Err(Refusal::UnmatchedDenied),
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
