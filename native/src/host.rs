//! The core's `Host` for one hook: the running stream's (a request's headers, its callout's
//! answer, its end), or the root's (a tick, or the configuration's callout's answer, on Envoy's
//! main thread). It reads the running stream and counts through it; every action on a stream is
//! buffered under the context current at the time and taken after the worker's lock is released
//! (`streams`, which says why).

use std::cell::{Cell, RefCell};
use std::time::{SystemTime, UNIX_EPOCH};

use obo_core::host::{Callout, DispatchError, HeaderValues, Host, LogLevel};
use obo_core::metrics::Counter;

use crate::abi::{CalloutInit, HeaderType, LogLevel as EnvoyLevel};
use crate::envoy::{self, Request, Stream};
use crate::shared_data;
use crate::state::{next_token_id, ConfigState, ROOT_ID};
use crate::streams::{Action, Slot};
use crate::token_file;

/// The stream whose hook is running, and what of its filter the host needs.
pub struct Running<'a> {
    pub stream: Stream,
    pub context_id: u32,
    /// A local reply was sent on it (`response_from_upstream` is false).
    pub local_reply: bool,
    /// Its callouts in flight: Envoy's id to the core's token id.
    pub calls: &'a RefCell<Vec<(u64, u32)>>,
    /// Its mailbox, made when it first may wait.
    pub slot: &'a RefCell<Option<std::sync::Arc<Slot>>>,
}

pub struct NativeHost<'a> {
    state: &'a ConfigState,
    running: Option<Running<'a>>,
    /// On the main thread for the root: the configuration's callouts may be made.
    root: bool,
    current: Cell<u32>,
    /// The running stream's own actions, taken by its hook.
    own: RefCell<Vec<Action>>,
    /// Actions for other contexts (every action, with no running stream), with the context.
    others: RefCell<Vec<(u32, Action)>>,
}

thread_local! {
    /// This thread is inside Envoy's callout call: an answer Envoy hands back before that call
    /// returns (a request it failed at once) must not take the worker's lock, which is held.
    static DISPATCHING: Cell<bool> = const { Cell::new(false) };
}

/// True while this thread is inside a callout call (see `DISPATCHING`).
pub fn dispatching() -> bool {
    DISPATCHING.with(Cell::get)
}

/// Makes a callout with `DISPATCHING` set (a callout call cannot panic: it only calls Envoy).
fn calling_out(call: impl FnOnce() -> Result<u64, CalloutInit>) -> Result<u64, CalloutInit> {
    DISPATCHING.with(|d| d.set(true));
    let sent = call();
    DISPATCHING.with(|d| d.set(false));
    sent
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

impl<'a> NativeHost<'a> {
    pub fn stream(state: &'a ConfigState, running: Running<'a>) -> Self {
        NativeHost {
            state,
            current: Cell::new(running.context_id),
            running: Some(running),
            root: false,
            own: RefCell::new(Vec::new()),
            others: RefCell::new(Vec::new()),
        }
    }

    /// Acting for `context_id` with no stream of Envoy's at hand (a filter's destroy hook).
    pub fn detached(state: &'a ConfigState, context_id: u32) -> Self {
        NativeHost {
            state,
            running: None,
            root: false,
            current: Cell::new(context_id),
            own: RefCell::new(Vec::new()),
            others: RefCell::new(Vec::new()),
        }
    }

    /// The root's, on the main thread.
    pub fn root(state: &'a ConfigState) -> Self {
        NativeHost {
            root: true,
            ..Self::detached(state, ROOT_ID)
        }
    }

    /// The running stream's own actions buffered so far, in order.
    pub fn take_own_actions(&self) -> Vec<Action> {
        self.own.take()
    }

    /// The actions buffered so far for other contexts, in order, with the context each is for
    /// (with no running stream, every action).
    pub fn take_actions_for_others(&self) -> Vec<(u32, Action)> {
        self.others.take()
    }

    fn act(&self, action: Action) {
        let to = self.current.get();
        if self.running.as_ref().is_some_and(|r| r.context_id == to) {
            self.own.borrow_mut().push(action);
        } else {
            self.others.borrow_mut().push((to, action));
        }
    }

    /// The running stream, when the core acts for it. A header is changed on it at once, with no
    /// copy of the value: a change calls none of the module's hooks back, so the worker's lock
    /// may be held.
    fn own_stream(&self) -> Option<Stream> {
        let running = self.running.as_ref()?;
        (running.context_id == self.current.get()).then_some(running.stream)
    }

    fn running_stream(&self) -> Option<Stream> {
        self.running.as_ref().map(|r| r.stream)
    }

    fn header(&self, map: HeaderType, name: &str) -> Option<String> {
        self.running_stream()?.header(map, name).map(text)
    }

    fn send(&self, request: &Request<'_>) -> Result<u32, CalloutInit> {
        let token_id = next_token_id();
        match &self.running {
            Some(running) => {
                let callout_id = calling_out(|| running.stream.callout(request))?;
                running.calls.borrow_mut().push((callout_id, token_id));
            }
            // The core dispatches from the root only in `on_tick` and in `complete` of the
            // configuration's callout: both on the main thread, where these callouts are made.
            None if self.root => {
                if let Some(answer) = token_file::answer_for(request.cluster) {
                    self.state.answer_on_tick(token_id, answer);
                    return Ok(token_id);
                }
                let callout_id = calling_out(|| self.state.envoy.callout(request))?;
                self.state.remember_root_call(callout_id, token_id);
            }
            // A stream's end (`leave`) sends nothing: the root sends it again.
            None => return Err(CalloutInit::CANNOT_CREATE_REQUEST),
        }
        Ok(token_id)
    }
}

impl Host for NativeHost<'_> {
    fn now_ms(&self) -> u64 {
        // Without a clock, every cached token reads as expired and nothing is cached.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            })
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => EnvoyLevel::DEBUG,
            LogLevel::Info => EnvoyLevel::INFO,
            LogLevel::Warn => EnvoyLevel::WARN,
            LogLevel::Error => EnvoyLevel::ERROR,
        };
        envoy::log(level, message);
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.header(HeaderType::REQUEST_HEADER, name)
    }

    /// Into one buffer, as the core's hot path wants them: no value is copied twice or checked
    /// before the core looks at it, and the worker's buffer is filled again, not allocated.
    fn request_headers(&self, names: &[&str], values: &mut HeaderValues) {
        let (bytes, spans) = values.refill();
        let Some(stream) = self.running_stream() else {
            return;
        };
        bytes.reserve(2048);
        stream.append_headers(HeaderType::REQUEST_HEADER, names, bytes, spans);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        self.header(HeaderType::RESPONSE_HEADER, name)
    }

    fn response_from_upstream(&self) -> bool {
        self.running.as_ref().is_some_and(|r| !r.local_reply)
    }

    fn route_cluster(&self) -> Option<String> {
        self.running_stream()?.route_cluster().map(text)
    }

    fn set_request_header(&self, name: &str, value: &str) {
        match self.own_stream() {
            Some(stream) => stream.set_request_header(name, Some(value)),
            None => self.act(Action::SetHeader(name.to_string(), value.to_string())),
        }
    }

    fn remove_request_header(&self, name: &str) {
        match self.own_stream() {
            Some(stream) => stream.set_request_header(name, None),
            None => self.act(Action::RemoveHeader(name.to_string())),
        }
    }

    fn resume_request(&self) {
        self.act(Action::Resume);
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.act(Action::Reply {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        });
    }

    fn switch_to(&self, context_id: u32) -> bool {
        let own = self.running.as_ref().map(|r| r.context_id);
        let reachable = context_id == ROOT_ID
            || own == Some(context_id)
            || self.state.streams.is_registered(context_id);
        if reachable {
            self.current.set(context_id);
        }
        reachable
    }

    fn will_wait(&self, context_id: u32) {
        let Some(running) = &self.running else {
            return;
        };
        if running.context_id != context_id || running.slot.borrow().is_some() {
            return;
        }
        // Made on the stream's own thread, in its hook, as Envoy requires; registered inside the
        // worker's lock, so no answer can look for the stream before it is reachable.
        let slot = Slot::new(running.stream.scheduler());
        self.state.streams.register(context_id, slot.clone());
        *running.slot.borrow_mut() = Some(slot);
    }

    fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
        shared_data::get(key).0
    }

    fn shared_set(&self, key: &str, value: &[u8]) -> bool {
        shared_data::set(key, value, 0)
    }

    fn shared_get_versioned(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        shared_data::get(key)
    }

    fn shared_set_if(&self, key: &str, value: &[u8], version: u32) -> bool {
        shared_data::set(key, value, version)
    }

    fn dispatch(&self, callout: &Callout<'_>) -> Result<u32, DispatchError> {
        let request = Request {
            cluster: callout.cluster,
            headers: callout.headers,
            body: callout.body,
            timeout_ms: u64::try_from(callout.timeout.as_millis()).unwrap_or(u64::MAX),
        };
        self.send(&request).map_err(|init| match init {
            CalloutInit::CLUSTER_NOT_FOUND => DispatchError::UnknownCluster,
            _ => DispatchError::Refused,
        })
    }

    fn set_tick_period_ms(&self, period_ms: u64) {
        self.state.ticker.set_period_ms(period_ms);
    }

    fn count(&self, counter: Counter) {
        self.state.metrics.count(self.running_stream(), counter);
    }

    fn count_tenant_failure(&self, tenant: &str) {
        self.state
            .metrics
            .count_tenant_failure(self.running_stream(), tenant);
    }

    fn record_exchange_latency_ms(&self, ms: u64) {
        self.state.metrics.record_latency(self.running_stream(), ms);
    }
}
