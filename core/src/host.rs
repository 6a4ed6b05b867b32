//! The little the decisions need from a host: Envoy (`wasm/src/host_calls.rs`) or a fake one.

use std::borrow::Cow;
use std::ops::Range;
use std::time::Duration;

use crate::metrics::Counter;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Debug,
    Info,
    Warn,
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchError {
    /// Envoy has no cluster of that name (or refused the call's arguments).
    UnknownCluster,
    Refused,
}

/// A token request as the host sends it: pseudo-headers included.
pub struct Callout<'a> {
    pub cluster: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub timeout: Duration,
}

pub trait Host {
    fn now_unix(&self) -> u64 {
        self.now_ms() / 1000
    }
    fn now_ms(&self) -> u64;
    fn log(&self, level: LogLevel, message: &str);

    fn request_header(&self, name: &str) -> Option<String>;
    /// Up to `HeaderValues::MAX` request headers at once (a repeated header's values `,`-joined),
    /// into `values`, whose buffer a host may fill again rather than allocate another.
    fn request_headers(&self, names: &[&str], values: &mut HeaderValues) {
        debug_assert!(
            names.len() <= HeaderValues::MAX,
            "more names than HeaderValues holds"
        );
        *values = HeaderValues::copied(names.iter().map(|n| self.request_header(n)));
    }
    fn response_header(&self, name: &str) -> Option<String>;
    /// Not a local reply (this filter's refusals, or another filter's).
    fn response_from_upstream(&self) -> bool;
    /// `xds.cluster_name`; None without a route.
    fn route_cluster(&self) -> Option<String>;
    fn set_request_header(&self, name: &str, value: &str);
    fn remove_request_header(&self, name: &str);
    fn resume_request(&self);
    /// Answers locally; the request never reaches an upstream.
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]);
    /// Makes later calls act on another stream of this worker; false if that stream is gone.
    fn switch_to(&self, context_id: u32) -> bool;
    /// The running stream is about to wait for an exchange, which an answer on another thread
    /// may settle: a host whose threads share one worker (the native build) makes it reachable
    /// by `switch_to` from here, inside the worker's lock. A Wasm VM's one thread needs nothing.
    fn will_wait(&self, _context_id: u32) {}

    fn shared_get(&self, key: &str) -> Option<Vec<u8>>;
    fn shared_set(&self, key: &str, value: &[u8]) -> bool;
    /// The value and its compare-and-swap version (absent: None and 0).
    fn shared_get_versioned(&self, key: &str) -> (Option<Vec<u8>>, u32);
    /// Writes only if the value is still at `version`; false if another writer came first.
    fn shared_set_if(&self, key: &str, value: &[u8], version: u32) -> bool;

    /// Sends a token request; its answer comes back tagged with the returned token id.
    fn dispatch(&self, callout: &Callout<'_>) -> Result<u32, DispatchError>;
    /// Ticks the root context every `period_ms` (0: stop), to send delayed and orphaned requests.
    fn set_tick_period_ms(&self, period_ms: u64);

    fn count(&self, counter: Counter);
    /// A failed exchange: its outcome's counter and, where the provider's endpoint is per
    /// tenant, its tenant's (never its user's): which tenant struggles.
    fn count_failed_exchange(&self, outcome: Counter, tenant: Option<&str>) {
        self.count(outcome);
        if let Some(tenant) = tenant {
            self.count_tenant_failure(tenant);
        }
    }
    /// One more failed exchange of a user of `tenant` (a tid): `metrics::TenantCounters` says
    /// which counter it goes to.
    fn count_tenant_failure(&self, tenant: &str);
    fn record_exchange_latency_ms(&self, ms: u64);
}

/// Request header values read in one go, as bytes in one buffer. A cache hit borrows the token
/// from it: it neither copies nor validates the 1 to 2 KB before it finds its front-cache entry.
#[derive(Debug, Default)]
pub struct HeaderValues {
    bytes: Vec<u8>,
    spans: [Option<Range<usize>>; HeaderValues::MAX],
}

impl HeaderValues {
    pub const MAX: usize = 4;
    /// The most room a worker keeps between requests (`Worker::keep_header_buffer`).
    pub const KEPT_CAPACITY: usize = 16 * 1024;

    /// A span outside `bytes` reads as absent.
    pub fn new(bytes: Vec<u8>, spans: [Option<Range<usize>>; HeaderValues::MAX]) -> Self {
        HeaderValues { bytes, spans }
    }

    /// Its buffer and spans emptied to be filled again, the buffer keeping its room.
    pub fn refill(&mut self) -> (&mut Vec<u8>, &mut [Option<Range<usize>>; HeaderValues::MAX]) {
        self.bytes.clear();
        self.spans = Default::default();
        (&mut self.bytes, &mut self.spans)
    }

    /// The values, copied into one buffer (names past `MAX` are dropped).
    pub fn copied(values: impl IntoIterator<Item = Option<String>>) -> Self {
        let mut found = HeaderValues::default();
        for (span, value) in found.spans.iter_mut().zip(values) {
            if let Some(value) = value {
                let start = found.bytes.len();
                found.bytes.extend_from_slice(value.as_bytes());
                *span = Some(start..found.bytes.len());
            }
        }
        found
    }

    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    pub fn bytes(&self, i: usize) -> Option<&[u8]> {
        let span = self.spans.get(i)?.clone()?;
        self.bytes.get(span)
    }

    /// Bytes that are not UTF-8 are replaced, so such a value never matches.
    pub fn text(&self, i: usize) -> Option<Cow<'_, str>> {
        // `from_utf8` checks ASCII a word at a time, where `from_utf8_lossy` goes byte by byte.
        self.bytes(i).map(|bytes| match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        })
    }
}
