//! The exchanges a worker has in flight. Requests of one worker that need the same token share
//! one token request: the first sends it, the others wait on it, and its answer resumes (or
//! refuses) them all. An exchange outlives the request that sent it: if that request goes away,
//! or a failure is worth one retry, the worker's root context sends the token request (again) on
//! its next tick.

use std::collections::HashMap;
use std::rc::Rc;

use crate::backoff;
use crate::cache_key::CacheKey;
use crate::claim::{self, Claim};
use crate::claims_challenge::Holdoff;
use crate::client_assertion::LastAssertion;
use crate::config::{Config, Grant};
use crate::drop_signal::{DropWatch, Dropped};
use crate::error_reply::{exchange_log_line, reply_for, Refusal, Reply};
use crate::front_cache::{Fingerprint, FrontCache};
use crate::host::{Callout, DispatchError, Host, LogLevel};
use crate::metrics::Counter;
use crate::token_cache::{refresh_at, use_until, Cached, TokenCache};
use crate::token_request;
use crate::token_response::{read_answer, refused_by_envoy, ExchangeFailure, IssuedToken};

/// A token endpoint's answer as the host delivered it.
#[derive(Debug, Clone, Default)]
pub struct CallAnswer {
    /// None when the answer had no `:status` (a reset).
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    /// Envoy's `x-envoy-overloaded` was set: a circuit breaker of the token cluster overflowed.
    pub overloaded: bool,
    pub body: Vec<u8>,
}

/// The root context's tick while token requests wait to be sent.
const TICK_MS: u64 = 10;
/// A retry is only worth sending with at least this much of the time budget left.
const MIN_RETRY_BUDGET_MS: u64 = 100;
/// A claim outlives its exchange's time budget by this much before another worker may take it.
const CLAIM_MARGIN_MS: u64 = 500;
/// After a failed refresh ahead of expiry, the next try is this much later.
const REFRESH_RETRY_S: u64 = 10;

/// What an exchange is for, and the request that began it (named in the log if it fails).
#[derive(Clone)]
pub struct Ask {
    /// Its provider: an index into `Config::providers`, and that provider's grant.
    pub provider: usize,
    pub grant: Grant,
    /// The scope, or for `token_exchange` the audience.
    pub resource: String,
    /// Kept only while the exchange is in flight, to send it again if needed.
    pub subject_token: String,
    pub subject_exp: Option<u64>,
    /// The `:authority` of the request that began the exchange.
    pub target_host: String,
    /// Its `x-request-id`, if it had one.
    pub request_id: Option<String>,
    /// Its entry in this worker's front cache, which the token fills, so that the requests to
    /// come find it there.
    pub fingerprint: Fingerprint,
}

impl Ask {
    /// The shared-data key of its scope's backoff.
    fn backoff_key(&self, config: &Config) -> String {
        backoff::scope_key(&config.providers[self.provider], &self.resource)
    }
}

struct Flight {
    ask: Ask,
    /// The stream whose token request is in flight; None while the root is to send it.
    sender: Option<u32>,
    /// The token id of that request (an answer with any other id is stale).
    call: Option<u32>,
    /// Every stream waiting for this exchange, the sender included.
    waiters: Vec<u32>,
    /// Token requests sent so far (at most two: one retry).
    attempts: u32,
    /// When the whole exchange, retry included, must be over (`token_timeout_ms` after it began).
    deadline_ms: u64,
    /// A refresh ahead of expiry: nobody waits for it, and while it fails the cached token stays.
    background: bool,
    /// When the exchange began, for the latency histogram.
    started_ms: u64,
    /// Another worker holds the claim and exchanges: this one sends nothing, its waiters wait for
    /// that token in shared data until then, and after it this worker exchanges itself (the other
    /// may have died).
    elsewhere_until: Option<u64>,
}

impl Flight {
    /// An exchange about to be sent (by `sender`, or by the root context when None).
    fn new(
        ask: Ask,
        sender: Option<u32>,
        waiters: Vec<u32>,
        started_ms: u64,
        deadline_ms: u64,
    ) -> Self {
        Flight {
            ask,
            sender,
            call: None,
            attempts: u32::from(sender.is_some()),
            waiters,
            deadline_ms,
            background: false,
            started_ms,
            elsewhere_until: None,
        }
    }
}

/// Per-worker state, shared by the worker's root context and its request contexts.
pub struct Worker {
    config: Option<Rc<Config>>,
    /// Names this worker in shared-data claims; random, so workers (and VMs) differ.
    id: u64,
    front: FrontCache,
    /// Which tokens other workers dropped, so the front cache must let go of them.
    drops: DropWatch,
    /// The exchanges this worker's requests wait for: its own, and those of other workers.
    flights: HashMap<CacheKey, Flight>,
    /// Exchanges the root context is to send, and from when.
    pending: Vec<(CacheKey, u64)>,
    /// Each provider's last signed client assertion (`private_key_jwt`), by provider index.
    assertions: Vec<LastAssertion>,
    /// When this worker last dropped each token for an upstream's claims challenge.
    challenges: Holdoff,
    /// When the token endpoint last answered one of this worker's token requests, by provider
    /// index (ms).
    answered_ms: Vec<u64>,
}

/// What every request waiting on an exchange does once it is settled.
enum Settlement {
    /// Go on with this `Authorization` value.
    Forward(String),
    /// Be answered with this reply.
    Refuse(Reply),
}

impl Default for Worker {
    fn default() -> Self {
        use std::hash::{BuildHasher, Hasher};
        Worker {
            config: None,
            id: std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish(),
            front: FrontCache::new(0),
            drops: DropWatch::default(),
            flights: HashMap::new(),
            pending: Vec::new(),
            assertions: Vec::new(),
            challenges: Holdoff::default(),
            answered_ms: Vec::new(),
        }
    }
}

impl Worker {
    pub fn configure(&mut self, config: Config) {
        self.front = FrontCache::new(config.cache.worker_entries as usize);
        // A new configuration may hold new keys: nothing signed with the old ones is sent.
        self.assertions = config
            .providers
            .iter()
            .map(|_| Default::default())
            .collect();
        self.answered_ms = vec![0; config.providers.len()];
        self.config = Some(Rc::new(config));
    }

    pub fn front(&mut self) -> &mut FrontCache {
        &mut self.front
    }

    /// Whether an upstream's claims challenge at `now` is to drop `key`'s token
    /// (`cache.claims_challenge_holdoff_s`).
    pub fn may_drop_for_challenge(&mut self, key: CacheKey, now: u64) -> bool {
        let holdoff_s = self
            .config
            .as_ref()
            .map_or(0, |c| c.cache.claims_challenge_holdoff_s);
        self.challenges.may_drop(key, now, holdoff_s)
    }

    /// Lets go of the front-cache entries of the tokens dropped from the shared cache since the
    /// last look (at most one look a second), or of every entry if which ones is not known.
    pub fn catch_up_on_drops(&mut self, host: &dyn Host, now: u64) {
        match self.drops.look(host, now) {
            Dropped::Nothing => {}
            Dropped::Keys(keys) => self.front.forget_each(&keys),
            Dropped::Unknown => self.front.clear(),
        }
    }

    pub fn config(&self) -> Option<Rc<Config>> {
        self.config.clone()
    }

    /// Joins the exchange for `key`, sending its token request if none is in flight.
    pub fn join(
        &mut self,
        host: &dyn Host,
        context_id: u32,
        key: CacheKey,
        ask: Ask,
    ) -> Result<(), Refusal> {
        if let Some(flight) = self.flights.get_mut(&key) {
            flight.waiters.push(context_id);
            return Ok(());
        }
        let config = self.config.clone().ok_or(Refusal::NotConfigured)?;
        if self.at_exchange_limit(&config) {
            host.count(Counter::OverExchangeLimit);
            return Err(Refusal::TooManyExchanges);
        }
        let now_ms = host.now_ms();
        let deadline_ms = now_ms.saturating_add(config.token_timeout.as_millis() as u64);
        let claim_until = deadline_ms.saturating_add(CLAIM_MARGIN_MS);
        let slots = config.cache.max_entries;
        if claim::try_claim(host, &key, slots, self.id, now_ms, claim_until) == Claim::HeldElsewhere
        {
            let wait = Flight {
                elsewhere_until: Some(claim_until),
                ..Flight::new(ask, None, vec![context_id], now_ms, deadline_ms)
            };
            self.flights.insert(key, wait);
            host.set_tick_period_ms(TICK_MS);
            return Ok(());
        }
        let token_id =
            send(host, &config, &mut self.assertions, &ask, deadline_ms).inspect_err(|_| {
                claim::release(host, &key, slots, self.id);
            })?;
        let flight = Flight {
            call: Some(token_id),
            ..Flight::new(ask, Some(context_id), vec![context_id], now_ms, deadline_ms)
        };
        self.flights.insert(key, flight);
        Ok(())
    }

    /// Starts refreshing the token of `key` in the background, from the root context, unless an
    /// exchange for it is already under way here or on another worker, or the scope backs off.
    /// The request that noticed goes on with the cached token, as does everyone else.
    pub fn refresh(&mut self, host: &dyn Host, key: CacheKey, ask: Ask) {
        if self.flights.contains_key(&key) {
            return;
        }
        let Some(config) = self.config.clone() else {
            return;
        };
        // The token is still good: it is refreshed by a later request when there is room.
        if self.at_exchange_limit(&config) {
            return;
        }
        let now_ms = host.now_ms();
        if backoff::remaining_s(host, &ask.backoff_key(&config), now_ms).is_some() {
            return;
        }
        let deadline_ms = now_ms.saturating_add(config.token_timeout.as_millis() as u64);
        let claim_until = deadline_ms.saturating_add(CLAIM_MARGIN_MS);
        let slots = config.cache.max_entries;
        if claim::try_claim(host, &key, slots, self.id, now_ms, claim_until) == Claim::HeldElsewhere
        {
            return;
        }
        host.log(
            LogLevel::Debug,
            &format!("scope {}: refreshing a token ahead of expiry", ask.resource),
        );
        let flight = Flight {
            background: true,
            ..Flight::new(ask, None, Vec::new(), now_ms, deadline_ms)
        };
        self.flights.insert(key, flight);
        self.pending.push((key, now_ms));
        host.set_tick_period_ms(1);
    }

    /// Settles the exchange a token request answered: caches the token and resumes every waiting
    /// stream with it, or refuses them all; or, for a failure worth it, schedules one retry.
    /// `current` is the context the host is acting for now.
    pub fn complete(&mut self, host: &dyn Host, token_id: u32, answer: &CallAnswer, current: u32) {
        // A scan over this worker's exchanges in flight (tens usually, a few thousand in a burst
        // of new users): a map from token id would cost the .wasm another copy of the hash map.
        let Some(key) = self
            .flights
            .iter()
            .find(|(_, f)| f.call == Some(token_id))
            .map(|(key, _)| *key)
        else {
            return;
        };
        let Some(mut flight) = self.flights.remove(&key) else {
            return;
        };
        let Some(config) = self.config.clone() else {
            settle(
                host,
                &flight.waiters,
                &Settlement::Refuse(reply_for(&Refusal::NotConfigured)),
            );
            host.switch_to(current);
            return;
        };
        let outcome = if refused_by_envoy(answer.status, answer.overloaded, &answer.body) {
            Err(ExchangeFailure::RefusedByEnvoy)
        } else {
            read_answer(answer.status, answer.retry_after.as_deref(), &answer.body)
        };
        if outcome.as_ref().err().is_none_or(came_from_the_endpoint) {
            if let Some(answered) = self.answered_ms.get_mut(flight.ask.provider) {
                *answered = host.now_ms();
            }
        }
        let settlement = match outcome {
            Ok(issued) => {
                record_outcome(host, Counter::ExchangesOk, &flight);
                // In the shared cache before the claim ends, so no waiter misses it.
                let times = store(host, &config, &key, &flight, &issued);
                claim::release(host, &key, config.cache.max_entries, self.id);
                let token = &issued.access_token;
                match times {
                    Some(times) => {
                        let (fingerprint, now) = (flight.ask.fingerprint, host.now_unix());
                        let authorization =
                            self.front.put_token(fingerprint, key, token, times, now);
                        Settlement::Forward(authorization.to_string())
                    }
                    None => Settlement::Forward(format!("Bearer {token}")),
                }
            }
            Err(failure) => {
                if is_invalid_client(&failure) {
                    // Perhaps its assertion was refused: the next token request signs a new one.
                    if let Some(last) = self.assertions.get_mut(flight.ask.provider) {
                        last.forget();
                    }
                }
                if let Some(due_ms) = retry_at(host, &key, &flight, &failure) {
                    let refusal = Refusal::Exchange(failure);
                    host.log(
                        LogLevel::Info,
                        &format!(
                            "retrying once: {}",
                            exchange_log_line(&refusal, &flight.ask)
                        ),
                    );
                    flight.sender = None;
                    flight.call = None;
                    self.flights.insert(key, flight);
                    self.pending.push((key, due_ms));
                    host.set_tick_period_ms(TICK_MS);
                    return;
                }
                record_outcome(host, Counter::for_failure(&failure), &flight);
                let backoff_s = self.backoff_for(&failure, &flight, &config);
                if flight.background {
                    // Keep serving the cached token; try again a little later.
                    let now = host.now_unix();
                    TokenCache::new(config.cache.max_entries).postpone_refresh(
                        host,
                        &key,
                        now + REFRESH_RETRY_S,
                        now,
                    );
                    if let Some(wait_s) = backoff_s {
                        let scope_key = flight.ask.backoff_key(&config);
                        backoff::start(host, &scope_key, host.now_ms(), wait_s);
                    }
                } else {
                    remember_failure(host, &config, &key, &flight, &failure, backoff_s);
                }
                claim::release(host, &key, config.cache.max_entries, self.id);
                let refusal = Refusal::Exchange(failure);
                host.log(LogLevel::Warn, &exchange_log_line(&refusal, &flight.ask));
                Settlement::Refuse(reply_for(&refusal))
            }
        };
        settle(host, &flight.waiters, &settlement);
        host.switch_to(current);
    }

    /// A stream went away. If it had sent the token request, that request dies with it, so the
    /// root context sends it again for whoever still waits. A refresh goes on without waiters:
    /// the root sends it and its token is cached for the requests to come.
    pub fn leave(&mut self, host: &dyn Host, context_id: u32, key: &CacheKey) {
        let Some(flight) = self.flights.get_mut(key) else {
            return;
        };
        flight.waiters.retain(|w| *w != context_id);
        if flight.waiters.is_empty() && !flight.background {
            self.flights.remove(key);
            return;
        }
        if flight.sender == Some(context_id) {
            flight.sender = None;
            flight.call = None;
            self.pending.push((*key, 0));
            host.set_tick_period_ms(1);
        }
    }

    /// On the root context's tick: sends the token requests that are due, from the root context
    /// `root_id`. Returns the tick period still needed (0: none).
    pub fn on_tick(&mut self, host: &dyn Host, root_id: u32) -> u64 {
        let Some(config) = self.config.clone() else {
            return 0;
        };
        let now_ms = host.now_ms();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, due_ms)| *due_ms <= now_ms);
        self.pending = later;
        for (key, _) in due {
            let Some(flight) = self.flights.get_mut(&key) else {
                continue;
            };
            if flight.sender.is_some() || flight.elsewhere_until.is_some() {
                continue;
            }
            match send(
                host,
                &config,
                &mut self.assertions,
                &flight.ask,
                flight.deadline_ms,
            ) {
                Ok(token_id) => {
                    flight.sender = Some(root_id);
                    flight.call = Some(token_id);
                    flight.attempts += 1;
                }
                Err(refusal) => self.give_up(host, &key, &refusal, root_id),
            }
        }
        self.poll_remote(host, &config, root_id);
        if self.pending.is_empty() && !self.flights.values().any(|f| f.elsewhere_until.is_some()) {
            0
        } else {
            TICK_MS
        }
    }

    /// Settles the requests waiting on another worker's exchange once its outcome shows in shared
    /// data; exchanges here instead if that worker gave up its claim without a token, or died.
    fn poll_remote(&mut self, host: &dyn Host, config: &Rc<Config>, root_id: u32) {
        let now_ms = host.now_ms();
        let slots = config.cache.max_entries;
        let keys: Vec<CacheKey> = self
            .flights
            .iter()
            .filter(|(_, f)| f.elsewhere_until.is_some())
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            let Some(wait) = self.flights.get(&key) else {
                continue;
            };
            let give_up_ms = wait.elsewhere_until.unwrap_or(0);
            let now = now_ms / 1000;
            let settlement = match TokenCache::new(slots).get(host, &key, now) {
                Some(Cached::Token {
                    token,
                    until,
                    refresh_at,
                }) => {
                    let fingerprint = wait.ask.fingerprint;
                    let authorization =
                        self.front
                            .put_token(fingerprint, key, &token, (until, refresh_at), now);
                    Some(Settlement::Forward(authorization.to_string()))
                }
                Some(Cached::Rejected(json)) => {
                    let refusal = Refusal::Exchange(ExchangeFailure::remembered(json.as_bytes()));
                    Some(Settlement::Refuse(reply_for(&refusal)))
                }
                None => backoff::remaining_s(host, &wait.ask.backoff_key(config), now_ms).map(
                    |retry_after_s| {
                        Settlement::Refuse(reply_for(&Refusal::BackingOff { retry_after_s }))
                    },
                ),
            };
            if let Some(settlement) = settlement {
                if let Some(wait) = self.flights.remove(&key) {
                    settle(host, &wait.waiters, &settlement);
                    host.switch_to(root_id);
                }
                continue;
            }
            let claimer_gone = !claim::held_elsewhere(host, &key, slots, self.id, now_ms);
            if !claimer_gone && now_ms < give_up_ms {
                continue;
            }
            // Exchange here: claim the key (if another worker beat us to it, wait on that one).
            let deadline_ms = now_ms.saturating_add(config.token_timeout.as_millis() as u64);
            let claim_until = deadline_ms.saturating_add(CLAIM_MARGIN_MS);
            if claim::try_claim(host, &key, slots, self.id, now_ms, claim_until)
                == Claim::HeldElsewhere
                && now_ms < give_up_ms
            {
                continue;
            }
            let Some(wait) = self.flights.get_mut(&key) else {
                continue;
            };
            match send(host, config, &mut self.assertions, &wait.ask, deadline_ms) {
                Ok(token_id) => {
                    // Now this worker's own exchange, sent by the root context.
                    wait.elsewhere_until = None;
                    wait.sender = Some(root_id);
                    wait.call = Some(token_id);
                    wait.attempts = 1;
                    wait.started_ms = now_ms;
                    wait.deadline_ms = deadline_ms;
                }
                Err(refusal) => {
                    claim::release(host, &key, slots, self.id);
                    self.give_up(host, &key, &refusal, root_id);
                }
            }
        }
    }

    /// Ends the exchange for `key` with `refusal` for everyone waiting on it; `current` is the
    /// context the host is acting for now.
    fn give_up(&mut self, host: &dyn Host, key: &CacheKey, refusal: &Refusal, current: u32) {
        if let Some(flight) = self.flights.remove(key) {
            settle(
                host,
                &flight.waiters,
                &Settlement::Refuse(reply_for(refusal)),
            );
            host.switch_to(current);
        }
    }

    /// How long `failure` makes its scope back off, if at all (`backoff::wait_for`). Not for a
    /// timeout while the token endpoint answered other token requests of this worker since this
    /// exchange began: the time was lost in Envoy's queue for the token cluster (a burst of new
    /// tokens, junk ones perhaps), not at Entra ID, and backing off would refuse every new user.
    fn backoff_for(
        &self,
        failure: &ExchangeFailure,
        flight: &Flight,
        config: &Config,
    ) -> Option<u64> {
        let answered_ms = self
            .answered_ms
            .get(flight.ask.provider)
            .copied()
            .unwrap_or(0);
        if matches!(failure, ExchangeFailure::Timeout) && answered_ms > flight.started_ms {
            return None;
        }
        backoff::wait_for(failure, &config.backoff)
    }

    /// Whether the worker runs as many exchanges as it may (`max_exchanges_in_flight_per_worker`):
    /// every one it sends or waits on another worker for, so junk tokens cannot queue token
    /// requests past the token cluster's circuit breakers, nor hold more memory than that.
    fn at_exchange_limit(&self, config: &Config) -> bool {
        self.flights.len() >= config.max_exchanges_in_flight_per_worker as usize
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }
}

/// When to retry a failed token request, if at all: once, for a reset, an unreachable IdP or a
/// 5xx, never for a 4xx, and only within the exchange's time budget. The delay is jittered per key
/// so that many failed exchanges do not come back at the same instant.
fn retry_at(
    host: &dyn Host,
    key: &CacheKey,
    flight: &Flight,
    failure: &ExchangeFailure,
) -> Option<u64> {
    let retryable = match failure {
        ExchangeFailure::Unreachable | ExchangeFailure::Timeout => true,
        ExchangeFailure::IdpError { status, .. } => *status >= 500,
        _ => false,
    };
    if !retryable || flight.attempts >= 2 {
        return None;
    }
    let now_ms = host.now_ms();
    let jitter_ms = 20 + (u64::from(key.0[8]) ^ now_ms) % 100;
    let due_ms = now_ms + jitter_ms;
    (flight.deadline_ms.saturating_sub(due_ms) >= MIN_RETRY_BUDGET_MS).then_some(due_ms)
}

/// Counts an exchange's final outcome and records its latency.
fn record_outcome(host: &dyn Host, outcome: Counter, flight: &Flight) {
    host.count(outcome);
    host.record_exchange_latency_ms(host.now_ms().saturating_sub(flight.started_ms));
}

/// Caches the issued token; returns until when it is used and from when refreshed, if it is.
fn store(
    host: &dyn Host,
    config: &Config,
    key: &CacheKey,
    flight: &Flight,
    issued: &IssuedToken,
) -> Option<(u64, u64)> {
    let now = host.now_unix();
    let skew = config.cache.expiry_skew_s;
    match use_until(now, issued.expires_in, skew, flight.ask.subject_exp) {
        Some(until) => {
            let cache = &config.cache;
            let refresh = refresh_at(
                now,
                until,
                cache.refresh_ahead_s,
                cache.refresh_ahead_percent,
            );
            TokenCache::new(cache.max_entries).put(host, key, &issued.access_token, until, refresh);
            host.log(
                LogLevel::Debug,
                &format!(
                    "scope {}: token exchanged, cached for {} s",
                    flight.ask.resource,
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
                    flight.ask.resource
                ),
            );
            None
        }
    }
}

/// What a final failure leaves behind: an `invalid_grant` or a claims challenge is remembered for
/// this subject token and scope (negative cache): Entra ID answers the same token the same way, and
/// only a new one (after the caller stepped up) can pass. Throttling and server failures make the
/// scope back off.
fn remember_failure(
    host: &dyn Host,
    config: &Config,
    key: &CacheKey,
    flight: &Flight,
    failure: &ExchangeFailure,
    backoff_s: Option<u64>,
) {
    if let ExchangeFailure::InvalidGrant(idp) | ExchangeFailure::ClaimsChallenge(idp) = failure {
        if config.negative_cache_s > 0 {
            if let Ok(json) = serde_json::to_string(idp) {
                let until = host.now_unix().saturating_add(config.negative_cache_s);
                TokenCache::new(config.cache.max_entries).put_rejection(host, key, &json, until);
            }
        }
    }
    if let Some(wait_s) = backoff_s {
        backoff::start(host, &flight.ask.backoff_key(config), host.now_ms(), wait_s);
    }
}

/// Whether a failed token request got an answer from the token endpoint itself (not a timeout,
/// a reset, or Envoy's own refusal).
fn came_from_the_endpoint(failure: &ExchangeFailure) -> bool {
    !matches!(
        failure,
        ExchangeFailure::Timeout | ExchangeFailure::Unreachable | ExchangeFailure::RefusedByEnvoy
    )
}

/// Whether the token endpoint refused the client's credential.
fn is_invalid_client(failure: &ExchangeFailure) -> bool {
    matches!(failure, ExchangeFailure::IdpError { idp: Some(idp), .. } if idp.error == "invalid_client")
}

fn send(
    host: &dyn Host,
    config: &Config,
    assertions: &mut [LastAssertion],
    ask: &Ask,
    deadline_ms: u64,
) -> Result<u32, Refusal> {
    // Targets name providers by an index checked when the configuration was loaded.
    let provider = &config.providers[ask.provider];
    let left_ms = deadline_ms.saturating_sub(host.now_ms()).max(1);
    let now = host.now_unix();
    // The last second in which the token endpoint may still receive this request.
    let arrive_by = now.saturating_add(left_ms.div_ceil(1000));
    let mut unsigned = LastAssertion::default();
    let last = assertions.get_mut(ask.provider).unwrap_or(&mut unsigned);
    let signatures = last.signatures();
    let credential =
        token_request::client_credential(provider, last, now, arrive_by).map_err(|why| {
            host.count(Counter::ExchangesUpstreamError);
            host.log(LogLevel::Warn, &format!("token request not sent: {why}"));
            Refusal::CannotDispatch
        })?;
    let body = token_request::form_body(provider, &credential, &ask.resource, &ask.subject_token);
    if last.signatures() > signatures {
        host.count(Counter::ClientAssertionsSigned);
    }
    let headers = token_request::headers(provider);
    let callout = Callout {
        cluster: &provider.token_cluster,
        headers: &headers,
        body: &body,
        timeout: std::time::Duration::from_millis(left_ms),
    };
    host.dispatch(&callout).map_err(|e| {
        host.count(Counter::ExchangesUpstreamError);
        let why = match e {
            DispatchError::UnknownCluster => "unknown token_cluster",
            DispatchError::Refused => "refused by the host",
        };
        host.log(
            LogLevel::Warn,
            &format!(
                "token request to cluster {} not sent: {why}",
                provider.token_cluster
            ),
        );
        Refusal::CannotDispatch
    })
}

/// Applies `settlement` to every waiting stream that is still there.
fn settle(host: &dyn Host, waiters: &[u32], settlement: &Settlement) {
    for &waiter in waiters {
        if !host.switch_to(waiter) {
            continue;
        }
        match settlement {
            Settlement::Forward(authorization) => {
                host.set_request_header("authorization", authorization);
                host.resume_request();
            }
            Settlement::Refuse(reply) => {
                host.count(Counter::FailedExchange);
                send_reply(host, reply);
            }
        }
    }
}

/// Answers the current stream with `reply`.
pub fn send_reply(host: &dyn Host, reply: &Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (*n, v.as_str()))
        .collect();
    host.send_reply(reply.status, &headers, reply.body.as_bytes());
}
