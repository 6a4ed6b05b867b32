//! One request's way through the filter: match a target, take the bearer token, serve it from the
//! cache or join an exchange, and forward or refuse.

use std::cell::RefCell;
use std::rc::Rc;

use crate::cache_key::CacheKey;
use crate::config::Unmatched;
use crate::error_reply::{log_line, reply_for, Refusal};
use crate::exchange::{send_reply, CallAnswer, Worker};
use crate::host::{Host, LogLevel};
use crate::subject_token::{bearer_token, expiry_claim};
use crate::target_match::find_target;
use crate::token_cache::TokenCache;

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
}

impl RequestFilter {
    pub fn new(context_id: u32, worker: Rc<RefCell<Worker>>) -> Self {
        RequestFilter {
            context_id,
            worker,
            waiting_on: None,
        }
    }

    pub fn on_request_headers(&mut self, host: &dyn Host) -> Verdict {
        let mut worker = self.worker.borrow_mut();
        let Some(config) = worker.config() else {
            return refuse(host, &Refusal::NotConfigured);
        };
        let authority = host.request_header(":authority").unwrap_or_default();
        let path = host.request_header(":path").unwrap_or_default();
        let Some(target) = find_target(&config.targets, &authority, &path) else {
            return match config.unmatched {
                Unmatched::Passthrough => Verdict::Continue,
                Unmatched::Deny => refuse(host, &Refusal::UnmatchedDenied),
            };
        };
        let authorization = host.request_header("authorization");
        let Some(subject_token) = authorization.as_deref().and_then(bearer_token) else {
            return refuse(host, &Refusal::NoBearerToken);
        };
        let key = CacheKey::derive(
            &config.token_endpoint.url,
            &config.client_id,
            &target.scope,
            subject_token,
        );
        let cache = TokenCache::new(config.cache.max_entries);
        if let Some(token) = cache.get(host, &key, host.now_unix()) {
            host.set_request_header("authorization", &format!("Bearer {token}"));
            return Verdict::Continue;
        }
        let exp = expiry_claim(subject_token);
        match worker.join(
            host,
            self.context_id,
            key,
            &target.scope,
            subject_token,
            exp,
        ) {
            Ok(()) => {
                self.waiting_on = Some(key);
                Verdict::Pause
            }
            Err(refusal) => refuse(host, &refusal),
        }
    }

    /// The answer to a token request this stream sent.
    pub fn on_token_answer(&mut self, host: &dyn Host, token_id: u32, answer: &CallAnswer) {
        self.waiting_on = None;
        self.worker
            .borrow_mut()
            .complete(host, token_id, answer, self.context_id);
    }

    pub fn on_done(&mut self, host: &dyn Host) {
        if let Some(key) = self.waiting_on.take() {
            self.worker.borrow_mut().leave(host, self.context_id, &key);
        }
    }
}

fn refuse(host: &dyn Host, refusal: &Refusal) -> Verdict {
    host.log(LogLevel::Info, &log_line(refusal));
    send_reply(host, &reply_for(refusal));
    Verdict::Pause
}
