//! One stream's filter: each hook hands the stream to `obo_core::filter::RequestFilter`, with the
//! native `Host`, and says what is left to do once the worker's lock is released (`After`).
//!
//! The hooks (`hooks.rs`) hold no reference to the filter while they take its actions: Envoy may
//! run this stream's other hooks, or destroy its filter, before `send_response` or
//! `continue_decoding` returns. So the filter's state is in cells, reached through `&Filter` for
//! as long as a decision takes, and every hook takes its stream's own actions last.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use obo_core::exchange::CallAnswer;
use obo_core::filter::{RequestFilter, Verdict};

use crate::abi::FilterStatus;
use crate::envoy::Stream;
use crate::host::{NativeHost, Running};
use crate::state::{ConfigState, Shared};
use crate::streams::{self, Action, Slot};

pub struct Filter {
    state: &'static ConfigState,
    context_id: u32,
    core: RefCell<RequestFilter<Shared>>,
    /// A local reply (this filter's, another filter's, the router's) was sent on this stream:
    /// whatever response follows is not the upstream's.
    local_reply: Cell<bool>,
    /// Its token requests in flight: Envoy's callout id to the core's token id.
    calls: RefCell<Vec<(u64, u32)>>,
    /// Its mailbox, once it may wait for an exchange.
    slot: RefCell<Option<Arc<Slot>>>,
    /// The request waits for an exchange: its body and trailers are held too, never sent on
    /// ahead of the headers with the caller's token.
    held: Cell<bool>,
}

/// What a hook does after deciding, with no borrow of the filter: the stream's own actions.
#[must_use]
pub struct After {
    own: Vec<Action>,
    verdict: Verdict,
}

impl After {
    /// In the request-headers hook, whose return value resumes or holds the request.
    pub fn take_in_request_headers(self, stream: Stream) -> FilterStatus {
        let taken = streams::take(stream, self.own, false);
        if taken.replied {
            return FilterStatus::STOP_ITERATION;
        }
        match (self.verdict, taken.resumed) {
            (Verdict::Continue, _) | (_, true) => FilterStatus::CONTINUE,
            (Verdict::Pause, false) => FilterStatus::STOP_ITERATION,
        }
    }

    /// In any other hook of the stream.
    pub fn take(self, stream: Stream) {
        streams::take(stream, self.own, true);
    }
}

impl Filter {
    pub fn new(state: &'static ConfigState) -> Filter {
        let context_id = state.new_context_id();
        Filter {
            state,
            context_id,
            core: RefCell::new(RequestFilter::new(context_id, Shared(state))),
            local_reply: Cell::new(false),
            calls: RefCell::new(Vec::new()),
            slot: RefCell::new(None),
            held: Cell::new(false),
        }
    }

    fn host(&self, stream: Stream) -> NativeHost<'_> {
        NativeHost::stream(
            self.state,
            Running {
                stream,
                context_id: self.context_id,
                local_reply: self.local_reply.get(),
                calls: &self.calls,
                slot: &self.slot,
            },
        )
    }

    /// Hands other streams their actions, and keeps this one's for the hook to take; a request
    /// resumed or answered is no longer held.
    fn after(&self, host: NativeHost<'_>, verdict: Verdict) -> After {
        let others = host.take_actions_for_others();
        // Usually there are none (a cache hit's one action is its own).
        if !others.is_empty() {
            self.state.streams.post(others);
        }
        self.own_actions(host.take_own_actions(), verdict)
    }

    fn own_actions(&self, own: Vec<Action>, verdict: Verdict) -> After {
        if !streams::holds(true, &own) {
            self.held.set(false);
        }
        After { own, verdict }
    }

    pub fn on_request_headers(&self, stream: Stream) -> After {
        self.state.metrics.hand_over(stream);
        let host = self.host(stream);
        let verdict = self.core.borrow_mut().on_request_headers(&host);
        let after = self.after(host, verdict);
        self.held
            .set(streams::holds(verdict == Verdict::Pause, &after.own));
        after
    }

    /// The request waits for an exchange (its body and trailers wait with it).
    pub fn is_held(&self) -> bool {
        self.held.get()
    }

    pub fn on_response_headers(&self, stream: Stream) -> After {
        let host = self.host(stream);
        self.core.borrow_mut().on_response_headers(&host);
        self.after(host, Verdict::Continue)
    }

    /// The answer to one of this stream's token requests.
    pub fn on_token_answer(&self, stream: Stream, callout_id: u64, answer: &CallAnswer) -> After {
        let token_id = {
            let mut calls = self.calls.borrow_mut();
            let at = calls.iter().position(|(id, _)| *id == callout_id);
            at.map(|at| calls.swap_remove(at).1)
        };
        let host = self.host(stream);
        if let Some(token_id) = token_id {
            self.core
                .borrow_mut()
                .on_token_answer(&host, token_id, answer);
        }
        self.after(host, Verdict::Continue)
    }

    /// What other threads left in this stream's mailbox.
    pub fn on_mail(&self, stream: Stream) -> After {
        self.state.metrics.hand_over(stream);
        let own = self
            .slot
            .borrow()
            .as_ref()
            .map(|slot| slot.take_mail())
            .unwrap_or_default();
        self.own_actions(own, Verdict::Continue)
    }

    /// Envoy is about to answer locally (1.38 offers no `response.code_details` attribute, so
    /// this hook is how the filter tells a local reply from the upstream's response).
    pub fn on_local_reply(&self) {
        self.local_reply.set(true);
    }

    /// The stream is gone (the filter's destroy hook): an exchange it sent is sent again from the
    /// root for those still waiting, and no other thread reaches it any more.
    pub fn end(&self) {
        let host = NativeHost::detached(self.state, self.context_id);
        self.core.borrow_mut().on_end(&host);
        if self.slot.borrow().is_some() {
            self.state.streams.unregister(self.context_id);
        }
        let others = host
            .take_actions_for_others()
            .into_iter()
            .filter(|(to, _)| *to != self.context_id)
            .collect();
        self.state.streams.post(others);
    }
}
