//! The exchanges a worker has in flight. Requests of one worker that need the same token share
//! one token request: the first sends it, the others wait on it, and its answer resumes (or
//! refuses) them all. The exchange outlives the request that sent it: if that request goes away,
//! the worker's root context sends the token request again for those still waiting.

use std::collections::HashMap;
use std::rc::Rc;

use crate::cache_key::CacheKey;
use crate::config::Config;
use crate::error_reply::{log_line, reply_for, Refusal, Reply};
use crate::host::{Callout, DispatchError, Host, LogLevel};
use crate::token_cache::{use_until, TokenCache};
use crate::token_request;
use crate::token_response::{read_answer, IssuedToken};

/// A token endpoint's answer as the host delivered it.
#[derive(Debug, Clone, Default)]
pub struct CallAnswer {
    /// None when the answer had no `:status` (a reset).
    pub status: Option<u16>,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

struct Flight {
    scope: String,
    /// Kept only while the exchange is in flight, to re-send it if its sender goes away.
    subject_token: String,
    subject_exp: Option<u64>,
    /// The stream whose token request is in flight; None while waiting for the root to re-send.
    sender: Option<u32>,
    /// Every stream waiting for this exchange, the sender included.
    waiters: Vec<u32>,
}

/// Per-worker state, shared by the worker's root context and its request contexts.
#[derive(Default)]
pub struct Worker {
    config: Option<Rc<Config>>,
    flights: HashMap<CacheKey, Flight>,
    calls: HashMap<u32, CacheKey>,
    orphans: Vec<CacheKey>,
}

/// What every request waiting on an exchange does once it is settled.
enum Settlement {
    /// Go on with this `Authorization` value.
    Forward(String),
    /// Be answered with this reply.
    Refuse(Reply),
}

impl Worker {
    pub fn configure(&mut self, config: Config) {
        self.config = Some(Rc::new(config));
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
        scope: &str,
        subject_token: &str,
        subject_exp: Option<u64>,
    ) -> Result<(), Refusal> {
        if let Some(flight) = self.flights.get_mut(&key) {
            flight.waiters.push(context_id);
            return Ok(());
        }
        let config = self.config.clone().ok_or(Refusal::NotConfigured)?;
        let token_id = send(host, &config, scope, subject_token)?;
        self.calls.insert(token_id, key);
        self.flights.insert(
            key,
            Flight {
                scope: scope.to_string(),
                subject_token: subject_token.to_string(),
                subject_exp,
                sender: Some(context_id),
                waiters: vec![context_id],
            },
        );
        Ok(())
    }

    /// Settles the exchange a token request answered: caches the token and resumes every waiting
    /// stream with it, or refuses them all. `current` is the context the host is acting for now.
    pub fn complete(&mut self, host: &dyn Host, token_id: u32, answer: &CallAnswer, current: u32) {
        let Some(key) = self.calls.remove(&token_id) else {
            return;
        };
        let Some(flight) = self.flights.remove(&key) else {
            return;
        };
        let outcome = read_answer(answer.status, answer.retry_after.as_deref(), &answer.body);
        let settlement = match (outcome, self.config.clone()) {
            (Ok(issued), Some(config)) => {
                self.store(host, &config, &key, &flight, &issued);
                Settlement::Forward(format!("Bearer {}", issued.access_token))
            }
            (Ok(_), None) => Settlement::Refuse(reply_for(&Refusal::NotConfigured)),
            (Err(failure), _) => {
                let refusal = Refusal::Exchange(failure);
                host.log(
                    LogLevel::Warn,
                    &format!("scope {}: {}", flight.scope, log_line(&refusal)),
                );
                Settlement::Refuse(reply_for(&refusal))
            }
        };
        settle(host, &flight.waiters, &settlement);
        host.switch_to(current);
    }

    fn store(
        &self,
        host: &dyn Host,
        config: &Config,
        key: &CacheKey,
        flight: &Flight,
        issued: &IssuedToken,
    ) {
        let now = host.now_unix();
        let skew = config.cache.expiry_skew_s;
        match use_until(now, issued.expires_in, skew, flight.subject_exp) {
            Some(until) => {
                TokenCache::new(config.cache.max_entries).put(
                    host,
                    key,
                    &issued.access_token,
                    until,
                );
                host.log(
                    LogLevel::Debug,
                    &format!(
                        "scope {}: token exchanged, cached for {} s",
                        flight.scope,
                        until - now
                    ),
                );
            }
            None => host.log(
                LogLevel::Debug,
                &format!(
                    "scope {}: token exchanged, too short-lived to cache",
                    flight.scope
                ),
            ),
        }
    }

    /// A stream went away. If it had sent the token request, that request dies with it, so the
    /// exchange is handed to the root context (on the next tick) for whoever still waits.
    pub fn leave(&mut self, host: &dyn Host, context_id: u32, key: &CacheKey) {
        let Some(flight) = self.flights.get_mut(key) else {
            return;
        };
        flight.waiters.retain(|w| *w != context_id);
        if flight.sender != Some(context_id) {
            return;
        }
        flight.sender = None;
        self.calls.retain(|_, k| k != key);
        if flight.waiters.is_empty() {
            self.flights.remove(key);
        } else {
            self.orphans.push(*key);
            host.request_tick();
        }
    }

    /// Re-sends the token requests whose senders went away, from the root context `root_id`.
    pub fn on_tick(&mut self, host: &dyn Host, root_id: u32) {
        let Some(config) = self.config.clone() else {
            return;
        };
        for key in std::mem::take(&mut self.orphans) {
            let Some(flight) = self.flights.get_mut(&key) else {
                continue;
            };
            if flight.sender.is_some() {
                continue;
            }
            match send(host, &config, &flight.scope, &flight.subject_token) {
                Ok(token_id) => {
                    flight.sender = Some(root_id);
                    self.calls.insert(token_id, key);
                }
                Err(refusal) => {
                    if let Some(flight) = self.flights.remove(&key) {
                        settle(
                            host,
                            &flight.waiters,
                            &Settlement::Refuse(reply_for(&refusal)),
                        );
                        host.switch_to(root_id);
                    }
                }
            }
        }
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.flights.len()
    }
}

fn send(
    host: &dyn Host,
    config: &Config,
    scope: &str,
    subject_token: &str,
) -> Result<u32, Refusal> {
    let body = token_request::form_body(config, scope, subject_token);
    let headers = token_request::headers(config);
    let callout = Callout {
        cluster: &config.token_cluster,
        headers: &headers,
        body: &body,
        timeout: config.token_timeout,
    };
    host.dispatch(&callout).map_err(|e| {
        let why = match e {
            DispatchError::UnknownCluster => "unknown token_cluster",
            DispatchError::Refused => "refused by the host",
        };
        host.log(
            LogLevel::Warn,
            &format!(
                "token request to cluster {} not sent: {why}",
                config.token_cluster
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
            Settlement::Refuse(reply) => send_reply(host, reply),
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
