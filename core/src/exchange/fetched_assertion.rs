//! Fetching a provider's client assertion through Envoy (`client_assertion_source`): from the root
//! context, when an exchange waits for one or the one held nears its `exp`; the exchanges waiting
//! for it are sent once it arrives, or refused with 503 if it does not.

use crate::assertion_source::{read_answer, FetchFailure};
use crate::backoff;
use crate::cache_key::CacheKey;
use crate::config::{ClientAuth, Config};
use crate::error_reply::{reply_for, Refusal};
use crate::host::{Callout, DispatchError, Host, LogLevel};
use crate::metrics::Counter;

use super::{CallAnswer, Exchange, Worker, REFRESH_RETRY_S};

impl Worker {
    /// Starts the fetches that are due: for a provider whose exchanges wait for an assertion, or
    /// whose assertion nears its `exp` (no request waits for that one).
    pub(super) fn fetch_assertions(&mut self, host: &dyn Host, config: &Config, root_id: u32) {
        let now = host.now_unix();
        for (index, provider) in config.providers.iter().enumerate() {
            let ClientAuth::Fetched(source) = &provider.client_auth else {
                continue;
            };
            let Some(held) = self.fetched.get(index) else {
                continue;
            };
            if held.fetching.is_some() {
                continue;
            }
            let awaited = self
                .exchanges
                .values()
                .any(|e| e.awaiting_assertion && e.params.provider == index);
            if !awaited && !held.refresh_ahead_due(now) {
                continue;
            }
            let headers = source.headers();
            let callout = Callout {
                cluster: &source.cluster,
                headers: &headers,
                body: b"",
                timeout: config.token_timeout,
            };
            host.count(Counter::ClientAssertionFetches);
            match host.dispatch(&callout) {
                Ok(id) => self.fetched[index].fetching = Some(id),
                Err(e) => {
                    let why = match e {
                        DispatchError::UnknownCluster => "Envoy has no such cluster",
                        DispatchError::Refused => "refused by the host",
                    };
                    self.assertion_failed(host, config, index, why, root_id);
                }
            }
        }
    }

    /// After `invalid_client`: the next token request signs a new assertion, or fetches one (the
    /// token file may have been rotated), and an exchange with a fetched one is tried once more.
    /// Gives the exchange back if it is to be refused.
    pub(super) fn after_invalid_client(
        &mut self,
        host: &dyn Host,
        config: &Config,
        key: CacheKey,
        mut exchange: Exchange,
    ) -> Option<Exchange> {
        let provider = exchange.params.provider;
        if let Some(last) = self.assertions.get_mut(provider) {
            last.forget();
        }
        if let Some(fetched) = self.fetched.get_mut(provider) {
            fetched.forget();
        }
        let fetches = matches!(
            config.providers[provider].client_auth,
            ClientAuth::Fetched(_)
        );
        if !fetches || exchange.attempts >= 2 {
            return Some(exchange);
        }
        host.log(
            LogLevel::Info,
            "token endpoint refused the client assertion (invalid_client): fetching a new one",
        );
        exchange.sender = None;
        exchange.call = None;
        exchange.awaiting_assertion = true;
        self.exchanges.insert(key, exchange);
        host.set_tick_period_ms(1);
        None
    }

    /// A fetch's answer: the assertion held and the waiting exchanges sent, or all of them refused.
    pub(super) fn assertion_answer(
        &mut self,
        host: &dyn Host,
        index: usize,
        answer: &CallAnswer,
        current: u32,
    ) {
        self.fetched[index].fetching = None;
        let Some(config) = self.config.clone() else {
            return;
        };
        let Some(ClientAuth::Fetched(source)) = config.providers.get(index).map(|p| &p.client_auth)
        else {
            return;
        };
        let now = host.now_unix();
        // A token request sent now may take token_timeout to arrive: an assertion too near its
        // exp for that is no better than none (holding it would only fetch it again at once).
        let arrive_by = now.saturating_add(config.token_timeout.as_millis().div_ceil(1000) as u64);
        let read = read_answer(source.format, answer.status, &answer.body, now).and_then(|f| {
            if f.usable_at(arrive_by) {
                Ok(f)
            } else {
                Err(FetchFailure::Junk("a JWT too close to its exp"))
            }
        });
        match read {
            Ok(fetched) => {
                self.fetched[index].hold(fetched);
                let now_ms = host.now_ms();
                // Every waiting exchange can use it: its token request arrives within
                // token_timeout, which the assertion outlives (checked above).
                for (key, exchange) in self.exchanges.iter_mut() {
                    if exchange.awaiting_assertion && exchange.params.provider == index {
                        exchange.awaiting_assertion = false;
                        self.pending.push((*key, now_ms));
                    }
                }
                host.set_tick_period_ms(1);
            }
            Err(failure) => {
                let why = failure.to_string();
                self.assertion_failed(host, &config, index, &why, current);
            }
        }
    }

    /// No assertion: the exchanges waiting for one are refused with 503 and their scopes back off;
    /// an assertion still held stays in use until its `exp`.
    fn assertion_failed(
        &mut self,
        host: &dyn Host,
        config: &Config,
        index: usize,
        why: &str,
        current: u32,
    ) {
        host.count(Counter::ClientAssertionFetchFailures);
        let now = host.now_unix();
        self.fetched[index].failed(now.saturating_add(REFRESH_RETRY_S));
        let provider = &config.providers[index];
        if let ClientAuth::Fetched(source) = &provider.client_auth {
            host.log(
                LogLevel::Warn,
                &format!(
                    "client assertion of provider {} not fetched from cluster {}: {why}",
                    provider.name, source.cluster
                ),
            );
        }
        let keys: Vec<CacheKey> = self
            .exchanges
            .iter()
            .filter(|(_, e)| e.awaiting_assertion && e.params.provider == index)
            .map(|(key, _)| *key)
            .collect();
        let retry_after_s = config.backoff.default_s.max(1);
        let refusal = Refusal::AssertionUnavailable { retry_after_s };
        for key in keys {
            let Some(exchange) = self.exchanges.remove(&key) else {
                continue;
            };
            if config.backoff.default_s > 0 {
                let scope = exchange.params.backoff_key(config);
                backoff::start(host, &scope, host.now_ms(), config.backoff.default_s);
            }
            // No token request was sent, but the tenant's users are refused all the same.
            if let Some(tenant) = &exchange.params.tenant {
                host.count_tenant_failure(tenant);
            }
            self.refuse_unanswered(host, &key, exchange, reply_for(&refusal));
        }
        host.switch_to(current);
    }
}
