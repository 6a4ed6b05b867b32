//! A host for unit tests: streams with headers, shared data, a clock and a record of every token
//! request, reply and resume.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use crate::host::{Callout, DispatchError, Host, LogLevel};
use crate::metrics::{Counter, TenantCounters, TENANT_EXCHANGE_FAILURES};

pub type SharedWriteHook = RefCell<Option<Box<dyn FnOnce(&FakeHost)>>>;

#[derive(Debug, Clone, Default)]
pub struct FakeStream {
    pub headers: Vec<(String, String)>,
    /// The cluster of the route Envoy picked for it.
    pub route_cluster: Option<String>,
    pub response_headers: Vec<(String, String)>,
    pub resumed: bool,
    pub reply: Option<FakeReply>,
    pub gone: bool,
}

#[derive(Debug, Clone)]
pub struct FakeReply {
    pub status: u32,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl FakeReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Clone)]
pub struct Dispatched {
    pub token_id: u32,
    /// The context the host was acting for when the call was sent.
    pub from: u32,
    pub cluster: String,
    pub headers: Vec<(String, String)>,
    pub form: Vec<(String, String)>,
    pub timeout: Duration,
}

impl Dispatched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeHost {
    /// Seconds since the epoch; `extra_ms` adds milliseconds.
    pub now: Cell<u64>,
    pub extra_ms: Cell<u64>,
    current: Cell<u32>,
    streams: RefCell<HashMap<u32, FakeStream>>,
    shared: RefCell<HashMap<String, (Vec<u8>, u32)>>,
    /// Every shared-data key read, in order.
    pub shared_reads: RefCell<Vec<String>>,
    /// The version the next shared-data write gets: one counter for all keys, as in Envoy.
    next_version: Cell<u32>,
    /// Runs once, just before the next shared-data write: another worker's steps, interleaved.
    pub before_next_write: SharedWriteHook,
    pub dispatched: RefCell<Vec<Dispatched>>,
    /// How often the route's cluster was read.
    pub route_reads: Cell<u32>,
    pub logs: RefCell<Vec<(LogLevel, String)>>,
    pub dispatch_error: Cell<Option<DispatchError>>,
    pub tick_period_ms: Cell<u64>,
    next_token: Cell<u32>,
    counters: RefCell<HashMap<Counter, u64>>,
    tenant_counters: RefCell<TenantCounters<usize>>,
    /// The tenant counters' stat names and counts, by id.
    tenant_stats: RefCell<Vec<(String, u64)>>,
    pub latencies_ms: RefCell<Vec<u64>>,
}

impl Default for FakeHost {
    fn default() -> Self {
        FakeHost {
            now: Cell::new(1_800_000_000),
            extra_ms: Cell::new(0),
            current: Cell::new(0),
            streams: RefCell::default(),
            shared: RefCell::default(),
            shared_reads: RefCell::default(),
            next_version: Cell::new(1),
            before_next_write: RefCell::default(),
            dispatched: RefCell::default(),
            route_reads: Cell::new(0),
            logs: RefCell::default(),
            dispatch_error: Cell::new(None),
            tick_period_ms: Cell::new(0),
            next_token: Cell::new(100),
            counters: RefCell::default(),
            tenant_counters: RefCell::default(),
            tenant_stats: RefCell::default(),
            latencies_ms: RefCell::default(),
        }
    }
}

impl FakeHost {
    /// A new stream with these request headers; the host now acts for it.
    pub fn open_stream(&self, id: u32, headers: &[(&str, &str)]) {
        let stream = FakeStream {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..FakeStream::default()
        };
        self.streams.borrow_mut().insert(id, stream);
        self.current.set(id);
    }

    /// Envoy's route sends stream `id` to `cluster`.
    pub fn set_route_cluster(&self, id: u32, cluster: &str) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&id) {
            s.route_cluster = Some(cluster.to_string());
        }
    }

    /// The host enters a callback of context `id` (as the SDK does before each callback).
    pub fn enter(&self, id: u32) {
        self.current.set(id);
    }

    /// The upstream's response headers arrive on stream `id`.
    pub fn respond(&self, id: u32, headers: &[(&str, &str)]) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&id) {
            s.response_headers = headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect();
        }
        self.current.set(id);
    }

    pub fn close_stream(&self, id: u32) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&id) {
            s.gone = true;
        }
    }

    pub fn stream(&self, id: u32) -> FakeStream {
        self.streams.borrow().get(&id).cloned().unwrap_or_default()
    }

    pub fn header_of(&self, id: u32, name: &str) -> Option<String> {
        self.stream(id)
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    }

    /// How many token requests were sent.
    pub fn token_requests(&self) -> usize {
        self.dispatched.borrow().len()
    }

    pub fn counted(&self, counter: Counter) -> u64 {
        self.counters.borrow().get(&counter).copied().unwrap_or(0)
    }

    /// Every counter that is not zero, by name.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        let mut all: Vec<_> = self
            .counters
            .borrow()
            .iter()
            .map(|(c, n)| (c.name(), *n))
            .collect();
        all.sort_unstable();
        all
    }

    /// Failed exchanges by tenant counter (a tid, or `other`), sorted.
    pub fn tenant_failures(&self) -> Vec<(String, u64)> {
        let prefix = format!("{TENANT_EXCHANGE_FAILURES}.");
        let mut all: Vec<_> = self
            .tenant_stats
            .borrow()
            .iter()
            .map(|(name, n)| (name.trim_start_matches(&prefix).to_string(), *n))
            .collect();
        all.sort_unstable();
        all
    }

    pub fn current(&self) -> u32 {
        self.current.get()
    }

    pub fn shared_keys(&self) -> usize {
        self.shared.borrow().len()
    }

    pub fn shared_contains(&self, needle: &[u8]) -> bool {
        self.shared.borrow().iter().any(|(k, (v, _))| {
            k.as_bytes().windows(needle.len()).any(|w| w == needle)
                || v.windows(needle.len()).any(|w| w == needle)
        })
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        self.now.get() * 1000 + self.extra_ms.get()
    }

    /// A stream answered locally has that reply for its response.
    fn response_header(&self, name: &str) -> Option<String> {
        let stream = self.stream(self.current.get());
        match stream.reply {
            Some(reply) => reply
                .header(name)
                .map(str::to_string)
                .or_else(|| (name == ":status").then(|| reply.status.to_string())),
            None => stream
                .response_headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone()),
        }
    }

    fn response_from_upstream(&self) -> bool {
        self.stream(self.current.get()).reply.is_none()
    }

    fn log(&self, level: LogLevel, message: &str) {
        self.logs.borrow_mut().push((level, message.to_string()));
    }

    fn request_header(&self, name: &str) -> Option<String> {
        self.header_of(self.current.get(), name)
    }

    fn route_cluster(&self) -> Option<String> {
        self.route_reads.set(self.route_reads.get() + 1);
        self.stream(self.current.get()).route_cluster
    }

    fn set_request_header(&self, name: &str, value: &str) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&self.current.get()) {
            s.headers.retain(|(n, _)| n != name);
            s.headers.push((name.to_string(), value.to_string()));
        }
    }

    fn remove_request_header(&self, name: &str) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&self.current.get()) {
            s.headers.retain(|(n, _)| n != name);
        }
    }

    fn resume_request(&self) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&self.current.get()) {
            s.resumed = true;
        }
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        if let Some(s) = self.streams.borrow_mut().get_mut(&self.current.get()) {
            s.reply = Some(FakeReply {
                status,
                headers: headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), v.to_string()))
                    .collect(),
                body: String::from_utf8_lossy(body).into_owned(),
            });
        }
    }

    fn switch_to(&self, context_id: u32) -> bool {
        let alive = context_id == 1
            || self
                .streams
                .borrow()
                .get(&context_id)
                .is_some_and(|s| !s.gone);
        if alive {
            self.current.set(context_id);
        }
        alive
    }

    fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
        self.shared_reads.borrow_mut().push(key.to_string());
        self.shared.borrow().get(key).map(|(v, _)| v.clone())
    }

    fn shared_set(&self, key: &str, value: &[u8]) -> bool {
        self.shared_set_if(key, value, 0)
    }

    fn shared_get_versioned(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        self.shared_reads.borrow_mut().push(key.to_string());
        match self.shared.borrow().get(key) {
            Some((v, version)) => (Some(v.clone()), *version),
            None => (None, 0),
        }
    }

    /// Like Envoy: an absent key is written whatever the version; a present one only if the
    /// version is 0 or its own. Every write takes the next number of one counter for all keys.
    fn shared_set_if(&self, key: &str, value: &[u8], version: u32) -> bool {
        let hook = self.before_next_write.borrow_mut().take();
        if let Some(hook) = hook {
            hook(self);
        }
        let mut shared = self.shared.borrow_mut();
        if let Some((_, current)) = shared.get(key) {
            if version != 0 && version != *current {
                return false;
            }
        }
        let written = self.next_version.get();
        self.next_version.set(written + 1);
        shared.insert(key.to_string(), (value.to_vec(), written));
        true
    }

    fn dispatch(&self, callout: &Callout<'_>) -> Result<u32, DispatchError> {
        if let Some(e) = self.dispatch_error.get() {
            return Err(e);
        }
        let token_id = self.next_token.get();
        self.next_token.set(token_id + 1);
        self.dispatched.borrow_mut().push(Dispatched {
            token_id,
            from: self.current.get(),
            cluster: callout.cluster.to_string(),
            headers: callout
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            form: form_urlencoded::parse(callout.body).into_owned().collect(),
            timeout: callout.timeout,
        });
        Ok(token_id)
    }

    fn set_tick_period_ms(&self, period_ms: u64) {
        self.tick_period_ms.set(period_ms);
    }

    fn count(&self, counter: Counter) {
        *self.counters.borrow_mut().entry(counter).or_default() += 1;
    }

    fn count_tenant_failure(&self, tenant: &str) {
        let mut stats = self.tenant_stats.borrow_mut();
        let define = |name: &str| {
            stats.push((name.to_string(), 0));
            Some(stats.len() - 1)
        };
        let id = self.tenant_counters.borrow_mut().counter(tenant, define);
        if let Some((_, n)) = id.and_then(|id| stats.get_mut(id)) {
            *n += 1;
        }
    }

    fn record_exchange_latency_ms(&self, ms: u64) {
        self.latencies_ms.borrow_mut().push(ms);
    }
}
