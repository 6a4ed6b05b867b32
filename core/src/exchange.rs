//! The exchanges a worker has in flight: one token request per key, whose answer resumes or
//! refuses every waiting request; the root sends it again when its sender goes away, or to retry.

use std::collections::HashMap;
use std::sync::Arc;

use crate::assertion_source::HeldAssertion;
use crate::backoff;
use crate::cache_key::CacheKey;
use crate::claims_challenge::RecentDrops;
use crate::client_assertion::LastAssertion;
use crate::config::{Config, Grant, Provider};
use crate::drop_signal::{DropWatch, Dropped};
use crate::error_reply::{reply_for, send_reply, Refusal, Reply};
use crate::front_cache::{Fingerprint, FrontCache};
use crate::host::{HeaderValues, Host, LogLevel};
use crate::lease::{self, Lease};
use crate::metrics::Counter;
use crate::token_cache::TokenCache;
use crate::token_request::{self, OnBehalf};

mod actor;
mod answer;
mod elsewhere;
mod fetched_assertion;

use actor::ActorState;
pub use actor::ActorToken;

#[derive(Debug, Clone, Default)]
pub struct CallAnswer {
    /// None when the answer had no `:status` (a reset).
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    /// Envoy's `x-envoy-overloaded` was set: a circuit breaker of the token cluster overflowed.
    pub overloaded: bool,
    pub body: Vec<u8>,
}

const TICK_MS: u64 = 10;
/// A retry is only worth sending with at least this much of the time budget left.
const MIN_RETRY_BUDGET_MS: u64 = 100;
/// A lease outlives its exchange's time budget by this much before another worker may take it.
const LEASE_MARGIN_MS: u64 = 500;
/// After a failed refresh ahead of expiry, the next try is this much later.
const REFRESH_RETRY_S: u64 = 10;

/// What an exchange is for, and the request that began it (named in the log if it fails).
#[derive(Clone)]
pub struct ExchangeParams {
    /// Its provider: an index into `Config::providers`, and that provider's grant.
    pub provider: usize,
    pub grant: Grant,
    pub resource: String,
    /// Kept only while the exchange is in flight, to send it again if needed.
    pub subject_token: String,
    pub subject_exp: Option<u64>,
    pub target_host: String,
    pub request_id: Option<String>,
    /// The front-cache entry the token fills, for the requests to come (None for an actor's
    /// token: it is no request's to forward).
    pub fingerprint: Option<Fingerprint>,
    /// The subject token's tenant (`tid`), where the provider's endpoint is per tenant.
    pub tenant: Option<String>,
    /// RFC 8707 resource indicators (`targets[].resource`).
    pub indicators: Vec<String>,
    /// The actor's token it is sent with, where its provider delegates (`actor`).
    pub actor: Option<ActorToken>,
}

impl ExchangeParams {
    fn backoff_key(&self, config: &Config) -> String {
        self.backoff_key_of(&config.providers[self.provider])
    }

    /// The shared-data key of its scope's backoff (per tenant where the endpoint is).
    pub fn backoff_key_of(&self, provider: &Provider) -> String {
        backoff::scope_key(provider, self.tenant.as_deref(), &self.resource)
    }

    /// Its token is used no later than the subject token's `exp`, nor the actor token's end.
    fn use_no_later_than(&self) -> Option<u64> {
        match (self.subject_exp, &self.actor) {
            (Some(exp), Some(actor)) => Some(exp.min(actor.until)),
            (exp, actor) => exp.or(actor.as_ref().map(|a| a.until)),
        }
    }
}

struct Exchange {
    params: ExchangeParams,
    /// The stream whose token request is in flight; None while the root is to send it.
    sender: Option<u32>,
    /// The token id of that request (an answer with any other id is stale).
    call: Option<u32>,
    /// Every stream waiting for this exchange, the sender included.
    waiters: Vec<u32>,
    /// Token requests sent so far (at most two: one retry).
    attempts: u32,
    deadline_ms: u64,
    /// A refresh ahead of expiry: nobody waits for it, and while it fails the cached token stays.
    background: bool,
    started_ms: u64,
    /// Another worker's lease: wait for its token until then, then exchange here (it may be gone).
    elsewhere_until: Option<u64>,
    /// Waits for its provider's client assertion to be fetched (`fetched_assertion`).
    awaiting_assertion: bool,
    /// Waits for its actor's token: the exchange of that token lists it in `dependents`.
    awaiting_actor: bool,
    /// The exchanges waiting for this one's token as their actor token (`actor`).
    dependents: Vec<CacheKey>,
}

impl Exchange {
    /// An exchange about to be sent (by `sender`, or by the root context when None).
    fn new(
        params: ExchangeParams,
        sender: Option<u32>,
        waiters: Vec<u32>,
        started_ms: u64,
        deadline_ms: u64,
    ) -> Self {
        Exchange {
            params,
            sender,
            call: None,
            attempts: u32::from(sender.is_some()),
            waiters,
            deadline_ms,
            background: false,
            started_ms,
            elsewhere_until: None,
            awaiting_assertion: false,
            awaiting_actor: false,
            dependents: Vec::new(),
        }
    }
}

/// Per-worker state, shared by the worker's root context and its request contexts.
pub struct Worker {
    config: Option<Arc<Config>>,
    /// Names this worker in shared-data claims; random, so workers (and VMs) differ.
    id: u64,
    front: FrontCache,
    cache: TokenCache,
    drops: DropWatch,
    /// The exchanges this worker's requests wait for: its own, and those of other workers.
    exchanges: HashMap<CacheKey, Exchange>,
    /// Exchanges the root context is to send, and from when.
    pending: Vec<(CacheKey, u64)>,
    assertions: Vec<LastAssertion>,
    /// Each provider's fetched client assertion (`client_assertion_source`), by provider index.
    fetched: Vec<HeldAssertion>,
    /// When this worker last dropped each token for an upstream's claims challenge.
    challenges: RecentDrops,
    /// When each provider's endpoint last answered this worker (ms): see `backoff_for`.
    answered_ms: Vec<u64>,
    /// The buffer each request's headers are read into, kept for the next request.
    header_buffer: HeaderValues,
}

struct Start {
    lease: Lease,
    deadline_ms: u64,
    lease_until: u64,
}

/// What every request waiting on an exchange does once it is settled.
enum Outcome {
    Forward(String),
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
            cache: TokenCache::new(1),
            drops: DropWatch::default(),
            exchanges: HashMap::new(),
            pending: Vec::new(),
            assertions: Vec::new(),
            fetched: Vec::new(),
            challenges: RecentDrops::default(),
            answered_ms: Vec::new(),
            header_buffer: HeaderValues::default(),
        }
    }
}

impl Worker {
    pub fn configure(&mut self, config: Config) {
        self.front = FrontCache::new(config.cache.worker_entries as usize);
        self.cache = TokenCache::new(config.cache.max_entries);
        // A new configuration may hold new keys: nothing signed with the old ones is sent.
        self.assertions = config
            .providers
            .iter()
            .map(|_| Default::default())
            .collect();
        self.fetched = config
            .providers
            .iter()
            .map(|_| Default::default())
            .collect();
        self.answered_ms = vec![0; config.providers.len()];
        self.config = Some(Arc::new(config));
    }

    /// The buffer to read a request's headers into (`keep_header_buffer` gives it back).
    pub fn take_header_buffer(&mut self) -> HeaderValues {
        std::mem::take(&mut self.header_buffer)
    }

    /// Kept emptied (no later request reads this one's values, whatever its host does), unless
    /// it grew past what a usual request needs, so one large request's headers do not stay
    /// allocated.
    pub fn keep_header_buffer(&mut self, mut buffer: HeaderValues) {
        if buffer.capacity() <= HeaderValues::KEPT_CAPACITY {
            buffer.refill();
            self.header_buffer = buffer;
        }
    }

    pub fn front(&mut self) -> &mut FrontCache {
        &mut self.front
    }

    pub fn may_drop_for_challenge(&mut self, key: CacheKey, now: u64) -> bool {
        let holdoff_s = self
            .config
            .as_ref()
            .map_or(0, |c| c.cache.claims_challenge_holdoff_s);
        self.challenges.may_drop(key, now, holdoff_s)
    }

    /// Lets go of the front-cache entries other workers dropped (one look a second at most).
    pub fn catch_up_on_drops(&mut self, host: &dyn Host, now: u64) {
        match self.drops.look(host, now) {
            Dropped::Nothing => {}
            Dropped::Keys(keys) => self.front.forget_each(&keys),
            Dropped::Unknown => self.front.clear(),
        }
    }

    pub fn config(&self) -> Option<Arc<Config>> {
        self.config.clone()
    }

    pub fn shared_cache(&self) -> TokenCache {
        self.cache
    }

    fn try_start(
        &self,
        host: &dyn Host,
        config: &Config,
        key: &CacheKey,
        params: &ExchangeParams,
        now_ms: u64,
    ) -> Start {
        let budget_ms = config.token_timeout.as_millis() as u64;
        let deadline_ms = now_ms.saturating_add(budget_ms);
        // One that may first wait for its actor's token holds its lease (and other workers wait)
        // for the actor's exchange too.
        let actor_ms = if params.may_wait_for_actor(config) {
            budget_ms
        } else {
            0
        };
        let lease_until = deadline_ms.saturating_add(actor_ms + LEASE_MARGIN_MS);
        let lease = lease::try_take(host, key, self.cache.slots(), self.id, now_ms, lease_until);
        Start {
            lease,
            deadline_ms,
            lease_until,
        }
    }

    pub fn join(
        &mut self,
        host: &dyn Host,
        context_id: u32,
        key: CacheKey,
        params: ExchangeParams,
    ) -> Result<(), Refusal> {
        host.will_wait(context_id);
        if let Some(exchange) = self.exchanges.get_mut(&key) {
            exchange.waiters.push(context_id);
            return Ok(());
        }
        let config = self.config.clone().ok_or(Refusal::NotConfigured)?;
        if self.at_exchange_limit(&config) {
            host.count(Counter::OverExchangeLimit);
            return Err(Refusal::TooManyExchanges);
        }
        let now_ms = host.now_ms();
        let Start {
            lease,
            deadline_ms,
            lease_until,
        } = self.try_start(host, &config, &key, &params, now_ms);
        if lease == Lease::HeldElsewhere {
            let wait = Exchange {
                elsewhere_until: Some(lease_until),
                ..Exchange::new(params, None, vec![context_id], now_ms, deadline_ms)
            };
            self.exchanges.insert(key, wait);
            host.set_tick_period_ms(TICK_MS);
            return Ok(());
        }
        let mut params = params;
        let actor = self
            .actor_for(host, &config, key, &mut params)
            .inspect_err(|_| lease::release(host, &key, self.cache.slots(), self.id))?;
        if actor == ActorState::Waiting {
            let wait = Exchange {
                awaiting_actor: true,
                ..Exchange::new(params, None, vec![context_id], now_ms, deadline_ms)
            };
            self.exchanges.insert(key, wait);
            return Ok(());
        }
        let credentials = (self.assertions.as_mut_slice(), self.fetched.as_slice());
        let sent = send(host, &config, credentials, &params, deadline_ms).inspect_err(|_| {
            lease::release(host, &key, self.cache.slots(), self.id);
        })?;
        let exchange = match sent {
            Some(token_id) => Exchange {
                call: Some(token_id),
                ..Exchange::new(
                    params,
                    Some(context_id),
                    vec![context_id],
                    now_ms,
                    deadline_ms,
                )
            },
            // The root context fetches the assertion, then sends the token request.
            None => {
                host.set_tick_period_ms(1);
                Exchange {
                    awaiting_assertion: true,
                    ..Exchange::new(params, None, vec![context_id], now_ms, deadline_ms)
                }
            }
        };
        self.exchanges.insert(key, exchange);
        Ok(())
    }

    /// From the root, unless an exchange for `key` is under way anywhere or the scope backs off.
    pub fn refresh(&mut self, host: &dyn Host, key: CacheKey, mut params: ExchangeParams) {
        if self.exchanges.contains_key(&key) {
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
        if backoff::remaining_s(host, &params.backoff_key(&config), now_ms).is_some() {
            return;
        }
        let start = self.try_start(host, &config, &key, &params, now_ms);
        if start.lease == Lease::HeldElsewhere {
            return;
        }
        // Only with an actor token that is not itself due for a refresh: one near its end would
        // make a token as short-lived, refreshed again at once.
        let actor = match self.actor_for(host, &config, key, &mut params) {
            Ok(ActorState::Stale) | Err(_) => {
                lease::release(host, &key, self.cache.slots(), self.id);
                return;
            }
            Ok(actor) => actor,
        };
        host.log(
            LogLevel::Debug,
            &format!(
                "scope {}: refreshing a token ahead of expiry",
                params.resource
            ),
        );
        let exchange = Exchange {
            background: true,
            awaiting_actor: actor == ActorState::Waiting,
            ..Exchange::new(params, None, Vec::new(), now_ms, start.deadline_ms)
        };
        self.exchanges.insert(key, exchange);
        if actor != ActorState::Waiting {
            self.pending.push((key, now_ms));
            host.set_tick_period_ms(1);
        }
    }

    /// A token request sent by a stream that went away is re-sent from the root if others wait.
    pub fn leave(&mut self, host: &dyn Host, context_id: u32, key: &CacheKey) {
        let Some(exchange) = self.exchanges.get_mut(key) else {
            return;
        };
        exchange.waiters.retain(|w| *w != context_id);
        // An actor's token (no request's: no fingerprint) serves the delegated exchanges to come.
        let wanted = exchange.background || exchange.params.fingerprint.is_none();
        if exchange.waiters.is_empty() && !wanted && exchange.dependents.is_empty() {
            if let Some(gone) = self.exchanges.remove(key) {
                // No token request of its own is out: other workers need not wait out its lease.
                if gone.call.is_none() {
                    lease::release(host, key, self.cache.slots(), self.id);
                }
                if gone.awaiting_actor {
                    self.forget_dependent(key, &gone.params);
                }
            }
            return;
        }
        if exchange.sender == Some(context_id) {
            exchange.sender = None;
            exchange.call = None;
            self.pending.push((*key, 0));
            host.set_tick_period_ms(1);
        }
    }

    /// Sends the token requests that are due; returns the tick period still needed (0: none).
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
            let Some(exchange) = self.exchanges.get_mut(&key) else {
                continue;
            };
            if exchange.sender.is_some()
                || exchange.elsewhere_until.is_some()
                || exchange.awaiting_assertion
                || exchange.awaiting_actor
            {
                continue;
            }
            let credentials = (self.assertions.as_mut_slice(), self.fetched.as_slice());
            let deadline_ms = exchange.deadline_ms;
            match send(host, &config, credentials, &exchange.params, deadline_ms) {
                Ok(Some(token_id)) => {
                    exchange.sender = Some(root_id);
                    exchange.call = Some(token_id);
                    exchange.attempts += 1;
                }
                Ok(None) => exchange.awaiting_assertion = true,
                Err(refusal) => self.give_up(host, &key, &refusal, root_id),
            }
        }
        self.poll_remote(host, &config, root_id);
        self.fetch_assertions(host, &config, root_id);
        if self.pending.is_empty() && !self.exchanges.values().any(|f| f.elsewhere_until.is_some())
        {
            0
        } else {
            TICK_MS
        }
    }

    /// Refuses everyone waiting on `key`; `current` is the context the host is acting for now.
    fn give_up(&mut self, host: &dyn Host, key: &CacheKey, refusal: &Refusal, current: u32) {
        if let Some(exchange) = self.exchanges.remove(key) {
            let reply = reply_for(refusal);
            finish(host, &exchange.waiters, &Outcome::Refuse(reply.clone()));
            self.settle_dependents(host, exchange.dependents, Err(&reply));
            host.switch_to(current);
        }
    }

    /// Ends an exchange no answer settled (its actor's token or its assertion never came): its
    /// lease is freed, a refresh is tried again later, and its waiters, and the exchanges waiting
    /// for its token as their actor's, are refused with `reply`.
    fn refuse_unanswered(
        &mut self,
        host: &dyn Host,
        key: &CacheKey,
        exchange: Exchange,
        reply: Reply,
    ) {
        lease::release(host, key, self.cache.slots(), self.id);
        if exchange.background {
            let now = host.now_unix();
            self.cache
                .postpone_refresh(host, key, now + REFRESH_RETRY_S, now);
        }
        finish(host, &exchange.waiters, &Outcome::Refuse(reply.clone()));
        self.settle_dependents(host, exchange.dependents, Err(&reply));
    }

    /// Those it waits on other workers for count too, so junk tokens can neither queue token
    /// requests past the token cluster's circuit breakers nor hold more memory.
    fn at_exchange_limit(&self, config: &Config) -> bool {
        self.exchanges.len() >= config.max_exchanges_in_flight_per_worker as usize
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.exchanges.len()
    }
}

fn send(
    host: &dyn Host,
    config: &Config,
    (assertions, fetched): (&mut [LastAssertion], &[HeldAssertion]),
    params: &ExchangeParams,
    deadline_ms: u64,
) -> Result<Option<u32>, Refusal> {
    // Targets name providers by an index checked when the configuration was loaded.
    let provider = &config.providers[params.provider];
    let mut unsigned = LastAssertion::default();
    let last = assertions.get_mut(params.provider).unwrap_or(&mut unsigned);
    let none_fetched = HeldAssertion::default();
    let fetched = fetched.get(params.provider).unwrap_or(&none_fetched);
    let on_behalf = OnBehalf {
        subject_token: &params.subject_token,
        tenant: params.tenant.as_deref(),
        actor_token: params.actor.as_ref().map(|a| a.token.as_str()),
    };
    token_request::send(
        host,
        provider,
        (last, fetched),
        (&params.resource, &params.indicators),
        on_behalf,
        deadline_ms,
    )
}

fn finish(host: &dyn Host, waiters: &[u32], outcome: &Outcome) {
    for &waiter in waiters {
        if !host.switch_to(waiter) {
            continue;
        }
        match outcome {
            Outcome::Forward(authorization) => {
                host.set_request_header("authorization", authorization);
                host.resume_request();
            }
            Outcome::Refuse(reply) => {
                host.count(Counter::FailedExchange);
                send_reply(host, reply);
            }
        }
    }
}

// A native module's threads share one worker behind a lock.
const _: () = {
    const fn shared_between_threads<T: Send>() {}
    shared_between_threads::<Worker>();
};
