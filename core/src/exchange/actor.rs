//! Delegation (RFC 8693 `actor`): an exchange whose provider names an actor is sent with the actor
//! provider's client-credentials token, itself cached, shared, leased and refreshed like any token.
//! The exchanges waiting for that token are sent once it arrives, or refused as it was.

use crate::backoff;
use crate::cache_key::CacheKey;
use crate::config::{Actor, Config, Grant};
use crate::error_reply::{Refusal, Reply};
use crate::host::Host;
use crate::lease::Lease;
use crate::metrics::Counter;
use crate::token_cache::Cached;
use crate::token_response::ExchangeFailure;

use super::{Exchange, ExchangeParams, Worker, TICK_MS};

/// The actor's token an exchange is sent with, and until when it may be used.
#[derive(Clone)]
pub struct ActorToken {
    pub token: String,
    pub until: u64,
}

impl ActorToken {
    pub(super) fn new(token: &str, until: u64) -> Self {
        ActorToken {
            token: token.to_string(),
            until,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ActorState {
    /// It has what it needs (no actor, or the actor's token).
    Ready,
    /// Ready, with an actor token due for its refresh (which is started).
    Stale,
    /// Waits for the actor's token: it is sent once that arrives.
    Waiting,
}

/// The key of an actor's token, as a `client_credentials` target's would be.
fn actor_key(config: &Config, actor: &Actor) -> CacheKey {
    let acting = &config.providers[actor.provider];
    CacheKey::derive(
        &acting.token_endpoint.url,
        acting.key_client(),
        acting.grant.name(),
        &actor.scope,
        "",
    )
}

/// The key and the exchange of an actor's token.
fn actor_exchange(
    config: &Config,
    actor: &Actor,
    for_params: &ExchangeParams,
) -> (CacheKey, ExchangeParams) {
    let key = actor_key(config, actor);
    let params = ExchangeParams {
        provider: actor.provider,
        grant: Grant::ClientCredentials,
        resource: actor.scope.clone(),
        subject_token: String::new(),
        subject_exp: None,
        target_host: for_params.target_host.clone(),
        request_id: for_params.request_id.clone(),
        fingerprint: None,
        tenant: None,
        indicators: Vec::new(),
        actor: None,
    };
    (key, params)
}

/// The actor's token is the application's: its refusal is told as the token endpoint's error
/// (502), never as a challenge to the caller's own token (401), which no token of theirs answers.
fn as_actors_failure(failure: ExchangeFailure) -> ExchangeFailure {
    match failure {
        ExchangeFailure::InvalidGrant(idp) | ExchangeFailure::ClaimsChallenge(idp) => {
            ExchangeFailure::IdpError {
                status: 400,
                idp: Some(idp),
            }
        }
        failure => failure,
    }
}

/// The reply `as_actors_failure` would give, made from the one the actor's exchange got.
fn as_actors_reply(reply: &Reply) -> Reply {
    let mut reply = reply.clone();
    if reply.status == 401 {
        reply.status = 502;
        reply
            .headers
            .retain(|(name, _)| *name != "www-authenticate");
    }
    reply
}

impl ExchangeParams {
    /// Its provider delegates and it has no actor token yet.
    pub(super) fn may_wait_for_actor(&self, config: &Config) -> bool {
        self.actor.is_none() && config.providers[self.provider].actor.is_some()
    }
}

impl Worker {
    /// Gives `params` (the exchange of `key`) its actor's token from the shared cache, or has it
    /// wait for one; refused where the actor's scope backs off or its refusal is remembered.
    pub(super) fn actor_for(
        &mut self,
        host: &dyn Host,
        config: &Config,
        key: CacheKey,
        params: &mut ExchangeParams,
    ) -> Result<ActorState, Refusal> {
        // Targets name providers, and providers actors, by indices checked at load time.
        let Some(actor) = &config.providers[params.provider].actor else {
            return Ok(ActorState::Ready);
        };
        let now = host.now_unix();
        if params.actor.as_ref().is_some_and(|a| a.until > now) {
            return Ok(ActorState::Ready);
        }
        let (actor_key, actor_params) = actor_exchange(config, actor, params);
        match self.cache.get(host, &actor_key, now) {
            Some(Cached::Token {
                token,
                until,
                refresh_at,
            }) => {
                params.actor = Some(ActorToken { token, until });
                if now < refresh_at {
                    return Ok(ActorState::Ready);
                }
                if self.room_for_actor(config, &key) {
                    self.refresh(host, actor_key, actor_params);
                }
                Ok(ActorState::Stale)
            }
            Some(Cached::Rejected(json)) => {
                let failure = ExchangeFailure::remembered(json.as_bytes());
                Err(Refusal::Exchange(as_actors_failure(failure)))
            }
            None => {
                self.wait_for_actor(host, config, key, actor_key, actor_params)?;
                Ok(ActorState::Waiting)
            }
        }
    }

    /// Lists `key` among the dependents of the actor token's exchange, started here if need be.
    fn wait_for_actor(
        &mut self,
        host: &dyn Host,
        config: &Config,
        key: CacheKey,
        actor_key: CacheKey,
        actor_params: ExchangeParams,
    ) -> Result<(), Refusal> {
        if let Some(exchange) = self.exchanges.get_mut(&actor_key) {
            exchange.dependents.push(key);
            return Ok(());
        }
        let now_ms = host.now_ms();
        let backoff_key = actor_params.backoff_key(config);
        if let Some(retry_after_s) = backoff::remaining_s(host, &backoff_key, now_ms) {
            return Err(Refusal::BackingOff { retry_after_s });
        }
        if !self.room_for_actor(config, &key) {
            host.count(Counter::OverExchangeLimit);
            return Err(Refusal::TooManyExchanges);
        }
        let start = self.try_start(host, config, &actor_key, &actor_params, now_ms);
        // Sent by the root context, which outlives the request that began it.
        let mut exchange = Exchange::new(actor_params, None, Vec::new(), now_ms, start.deadline_ms);
        exchange.dependents.push(key);
        if start.lease == Lease::HeldElsewhere {
            exchange.elsewhere_until = Some(start.lease_until);
            host.set_tick_period_ms(TICK_MS);
        } else {
            self.pending.push((actor_key, now_ms));
            host.set_tick_period_ms(1);
        }
        self.exchanges.insert(actor_key, exchange);
        Ok(())
    }

    /// Room under the exchange limit for an actor's exchange beside the exchange of `key`, which
    /// counts too once it is in the map.
    fn room_for_actor(&self, config: &Config, key: &CacheKey) -> bool {
        let needed = 1 + usize::from(!self.exchanges.contains_key(key));
        self.exchanges.len() + needed <= config.max_exchanges_in_flight_per_worker as usize
    }

    /// The exchanges waiting for an actor token: sent with it, or refused with the actor's answer.
    pub(super) fn settle_dependents(
        &mut self,
        host: &dyn Host,
        dependents: Vec<CacheKey>,
        actor: Result<ActorToken, &Reply>,
    ) {
        if dependents.is_empty() {
            return;
        }
        let now_ms = host.now_ms();
        let Some(config) = self.config.clone() else {
            return;
        };
        for key in dependents {
            let waiting = self.exchanges.get(&key).is_some_and(|e| e.awaiting_actor);
            if !waiting {
                continue;
            }
            match &actor {
                Ok(actor) => {
                    let Some(mut exchange) = self.exchanges.remove(&key) else {
                        continue;
                    };
                    exchange.awaiting_actor = false;
                    exchange.params.actor = Some(actor.clone());
                    // Its own time budget starts now, not when it began waiting, and its lease
                    // is renewed to cover it, so no other worker sends the same token request.
                    let start = self.try_start(host, &config, &key, &exchange.params, now_ms);
                    exchange.deadline_ms = start.deadline_ms;
                    if start.lease == Lease::HeldElsewhere {
                        // It ran out while waiting, and another worker took it: wait for that one.
                        exchange.elsewhere_until = Some(start.lease_until);
                    } else {
                        self.pending.push((key, now_ms));
                    }
                    self.exchanges.insert(key, exchange);
                    host.set_tick_period_ms(1);
                }
                Err(reply) => {
                    let Some(exchange) = self.exchanges.remove(&key) else {
                        continue;
                    };
                    self.refuse_unanswered(host, &key, exchange, as_actors_reply(reply));
                }
            }
        }
    }

    /// A delegated exchange gone before its actor's token came: the actor's exchange stops listing
    /// it, so callers who come and go cannot grow that list.
    pub(super) fn forget_dependent(&mut self, key: &CacheKey, params: &ExchangeParams) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let Some(actor) = &config.providers[params.provider].actor else {
            return;
        };
        if let Some(exchange) = self.exchanges.get_mut(&actor_key(&config, actor)) {
            exchange.dependents.retain(|k| k != key);
        }
    }

    /// How many exchanges the actors' exchanges list as waiting for their token.
    #[cfg(test)]
    pub fn dependents_listed(&self) -> usize {
        self.exchanges.values().map(|e| e.dependents.len()).sum()
    }
}
