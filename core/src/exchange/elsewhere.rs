//! Requests waiting on an exchange another worker holds the lease for: they take its token (or
//! refusal) from shared data, or this worker exchanges itself once that worker is gone.

use std::sync::Arc;

use crate::backoff;
use crate::cache_key::CacheKey;
use crate::config::Config;
use crate::error_reply::{reply_for, Refusal};
use crate::host::Host;
use crate::lease::{self, Lease};
use crate::token_cache::Cached;
use crate::token_response::ExchangeFailure;

use super::actor::{ActorState, ActorToken};
use super::{finish, send, Outcome, Start, Worker};

impl Worker {
    /// Settles the requests waiting on another worker's exchange once its outcome shows in shared
    /// data; exchanges here instead if that worker gave up its lease without a token, or died.
    pub(super) fn poll_remote(&mut self, host: &dyn Host, config: &Arc<Config>, root_id: u32) {
        let now_ms = host.now_ms();
        let slots = self.cache.slots();
        let keys: Vec<CacheKey> = self
            .exchanges
            .iter()
            .filter(|(_, f)| f.elsewhere_until.is_some())
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            let Some(wait) = self.exchanges.get(&key) else {
                continue;
            };
            let give_up_ms = wait.elsewhere_until.unwrap_or(0);
            let now = now_ms / 1000;
            let mut actor = None;
            let outcome = match self.cache.get(host, &key, now) {
                Some(Cached::Token {
                    token,
                    until,
                    refresh_at,
                }) => {
                    let authorization = match wait.params.fingerprint {
                        Some(fingerprint) => self
                            .front
                            .put_token(
                                fingerprint,
                                wait.params.subject_token.as_bytes(),
                                key,
                                &token,
                                (until, refresh_at),
                                now,
                            )
                            .to_string(),
                        None => format!("Bearer {token}"),
                    };
                    actor = Some(ActorToken::new(&token, until));
                    Some(Outcome::Forward(authorization))
                }
                Some(Cached::Rejected(json)) => {
                    let refusal = Refusal::Exchange(ExchangeFailure::remembered(json.as_bytes()));
                    Some(Outcome::Refuse(reply_for(&refusal)))
                }
                None => backoff::remaining_s(host, &wait.params.backoff_key(config), now_ms).map(
                    |retry_after_s| {
                        Outcome::Refuse(reply_for(&Refusal::BackingOff { retry_after_s }))
                    },
                ),
            };
            if let Some(outcome) = outcome {
                if let Some(wait) = self.exchanges.remove(&key) {
                    finish(host, &wait.waiters, &outcome);
                    match (&outcome, actor) {
                        (Outcome::Refuse(reply), _) => {
                            self.settle_dependents(host, wait.dependents, Err(reply))
                        }
                        (Outcome::Forward(_), Some(actor)) => {
                            self.settle_dependents(host, wait.dependents, Ok(actor))
                        }
                        (Outcome::Forward(_), None) => {}
                    }
                    host.switch_to(root_id);
                }
                continue;
            }
            let holder_gone = !lease::held_elsewhere(host, &key, slots, self.id, now_ms);
            if !holder_gone && now_ms < give_up_ms {
                continue;
            }
            // Exchange here: lease the key (if another worker beat us to it, wait on that one).
            let Start {
                lease, deadline_ms, ..
            } = self.try_start(host, config, &key, &wait.params, now_ms);
            if lease == Lease::HeldElsewhere && now_ms < give_up_ms {
                continue;
            }
            let Some(mut params) = self.exchanges.get(&key).map(|w| w.params.clone()) else {
                continue;
            };
            let actor = match self.actor_for(host, config, key, &mut params) {
                Ok(actor) => actor,
                Err(refusal) => {
                    lease::release(host, &key, slots, self.id);
                    self.give_up(host, &key, &refusal, root_id);
                    continue;
                }
            };
            let Some(wait) = self.exchanges.get_mut(&key) else {
                continue;
            };
            wait.params = params;
            if actor == ActorState::Waiting {
                wait.elsewhere_until = None;
                wait.awaiting_actor = true;
                wait.started_ms = now_ms;
                continue;
            }
            let credentials = (self.assertions.as_mut_slice(), self.fetched.as_slice());
            match send(host, config, credentials, &wait.params, deadline_ms) {
                // Now this worker's own exchange, sent by the root context (once the assertion
                // is fetched, where it must be).
                Ok(sent) => {
                    wait.elsewhere_until = None;
                    wait.sender = sent.map(|_| root_id);
                    wait.call = sent;
                    wait.attempts = u32::from(sent.is_some());
                    wait.awaiting_assertion = sent.is_none();
                    wait.started_ms = now_ms;
                    wait.deadline_ms = deadline_ms;
                }
                Err(refusal) => {
                    lease::release(host, &key, slots, self.id);
                    self.give_up(host, &key, &refusal, root_id);
                }
            }
        }
    }
}
