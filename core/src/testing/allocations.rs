//! Counting allocations: a global allocator that counts only on the thread that asks, and a host
//! for one cache hit that itself allocates nothing.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};

use super::{FakeHost, SUBJECT_1};
use crate::host::{Callout, DispatchError, HeaderValues, Host, LogLevel};
use crate::metrics::Counter;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

struct CountingAllocator;

fn note_allocation() {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY: every call is passed on to the system allocator unchanged.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// How many allocations `f` makes on this thread.
pub fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

/// A host for one cache hit: the request's headers made beforehand, the `Authorization` it sets
/// compared rather than kept, a 200 without `WWW-Authenticate`; the rest is the fake host's. (In
/// Envoy the header block is written into memory the VM allocates for it; that is the ABI's
/// allocation, not the filter's, and here the block is made before counting starts.)
pub struct HitHost<'a> {
    fake: &'a FakeHost,
    headers: RefCell<Option<HeaderValues>>,
    expected_authorization: &'a str,
    /// Whether the filter set `Authorization` to the expected value.
    pub sent_expected: Cell<bool>,
}

impl Host for HitHost<'_> {
    fn now_ms(&self) -> u64 {
        self.fake.now_ms()
    }
    fn log(&self, level: LogLevel, message: &str) {
        self.fake.log(level, message)
    }
    fn request_header(&self, name: &str) -> Option<String> {
        self.fake.request_header(name)
    }
    fn request_headers(&self, _names: &[&str], values: &mut HeaderValues) {
        *values = self.headers.borrow_mut().take().unwrap_or_default();
    }
    fn response_header(&self, _name: &str) -> Option<String> {
        None
    }
    fn response_from_upstream(&self) -> bool {
        true
    }
    fn route_cluster(&self) -> Option<String> {
        self.fake.route_cluster()
    }
    fn remove_request_header(&self, name: &str) {
        self.fake.remove_request_header(name)
    }
    fn set_request_header(&self, name: &str, value: &str) {
        self.sent_expected
            .set(name == "authorization" && value == self.expected_authorization);
    }
    fn resume_request(&self) {
        self.fake.resume_request()
    }
    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        self.fake.send_reply(status, headers, body)
    }
    fn switch_to(&self, context_id: u32) -> bool {
        self.fake.switch_to(context_id)
    }
    fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
        self.fake.shared_get(key)
    }
    fn shared_set(&self, key: &str, value: &[u8]) -> bool {
        self.fake.shared_set(key, value)
    }
    fn shared_get_versioned(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        self.fake.shared_get_versioned(key)
    }
    fn shared_set_if(&self, key: &str, value: &[u8], version: u32) -> bool {
        self.fake.shared_set_if(key, value, version)
    }
    fn dispatch(&self, callout: &Callout<'_>) -> Result<u32, DispatchError> {
        self.fake.dispatch(callout)
    }
    fn set_tick_period_ms(&self, period_ms: u64) {
        self.fake.set_tick_period_ms(period_ms)
    }
    fn count(&self, counter: Counter) {
        self.fake.count(counter)
    }
    fn count_tenant_failure(&self, tenant: &str) {
        self.fake.count_tenant_failure(tenant)
    }
    fn record_exchange_latency_ms(&self, ms: u64) {
        self.fake.record_exchange_latency_ms(ms)
    }
}

/// `SUBJECT_1`'s request to api.example.com, which is to be sent with `expected_authorization`.
pub fn hit_host<'a>(fake: &'a FakeHost, expected_authorization: &'a str) -> HitHost<'a> {
    let headers = HeaderValues::copied([
        Some("api.example.com".to_string()),
        Some("/orders".to_string()),
        Some(format!("Bearer {SUBJECT_1}")),
        Some("3f2b8c1e-9a4d-4e7b-8f6a-2c1d0e9b8a7f".to_string()),
    ]);
    HitHost {
        fake,
        headers: RefCell::new(Some(headers)),
        expected_authorization,
        sent_expected: Cell::new(false),
    }
}

#[test]
fn the_counting_allocator_counts() {
    assert_eq!(allocations_in(|| drop(std::hint::black_box(vec![1u8]))), 1);
}
