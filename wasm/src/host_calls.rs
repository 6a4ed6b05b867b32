//! `Host` over the proxy-wasm hostcalls of the Envoy this filter runs in.

use std::cell::{Cell, RefCell};
use std::ops::Range;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use obo_core::exchange::CallAnswer;
use obo_core::host::{Callout, DispatchError, HeaderValues, Host, LogLevel};
use obo_core::metrics::{Counter, TenantCounters, EXCHANGE_LATENCY_MS};
use obo_core::token_response::MAX_TOKEN_RESPONSE_BYTES;

pub struct ProxyHost;

// The SDK's wrappers for these two reads panic on any status but Ok and NotFound (a reset
// callout has no header map at all) and on header values that are not UTF-8. A panic kills the
// worker's VM, and either can be caused from outside, so the filter reads through these instead.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_value(
        map_type: MapType,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
    // The SDK's property wrapper panics on an unexpected status too.
    fn proxy_get_property(
        path_data: *const u8,
        path_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> Status;
    // The SDK's metric wrappers panic on an unexpected status too.
    fn proxy_define_metric(
        metric_type: proxy_wasm::types::MetricType,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> Status;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status;
    fn proxy_record_metric(metric_id: u32, value: u64) -> Status;
}

/// The counters in `Counter::ALL` order; None until `define_metrics` ran, or if Envoy refused one.
#[derive(Clone, Copy)]
struct MetricIds {
    counters: [u32; Counter::ALL.len()],
    latency: u32,
}

thread_local! {
    static METRIC_IDS: Cell<Option<MetricIds>> = const { Cell::new(None) };
    /// Counts not yet handed to Envoy: a request adds to these in the VM's memory, and the root
    /// context's tick flushes them, so the hot path makes no hostcall for its counter.
    static PENDING: Cell<[u64; Counter::ALL.len()]> = const { Cell::new([0; Counter::ALL.len()]) };
    /// Defined the first time a tenant's exchange fails on this worker.
    static TENANT_COUNTERS: RefCell<TenantCounters<u32>> = const { RefCell::new(TenantCounters::new()) };
}

/// How often pending counts reach Envoy's stats (the root context ticks at least this often).
pub const METRICS_FLUSH_MS: u64 = 1_000;

pub fn flush_metrics() {
    let pending = PENDING.with(|p| p.replace([0; Counter::ALL.len()]));
    with_metric_ids(|ids| {
        for (id, n) in ids.counters.iter().zip(pending) {
            if n > 0 {
                // SAFETY: plain values.
                let _ =
                    unsafe { proxy_increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX)) };
            }
        }
    });
}

fn define(metric_type: proxy_wasm::types::MetricType, name: &str) -> Option<u32> {
    let mut id = 0u32;
    // SAFETY: the name is a valid slice; the out-pointer is valid for the call.
    let status = unsafe { proxy_define_metric(metric_type, name.as_ptr(), name.len(), &mut id) };
    matches!(status, Status::Ok).then_some(id)
}

pub fn define_metrics() {
    use proxy_wasm::types::MetricType;
    let mut counters = [0u32; Counter::ALL.len()];
    for (slot, counter) in counters.iter_mut().zip(Counter::ALL) {
        match define(MetricType::Counter, counter.name()) {
            Some(id) => *slot = id,
            None => return,
        }
    }
    if let Some(latency) = define(MetricType::Histogram, EXCHANGE_LATENCY_MS) {
        METRIC_IDS.with(|ids| ids.set(Some(MetricIds { counters, latency })));
    }
}

fn with_metric_ids(f: impl FnOnce(&MetricIds)) {
    if let Some(ids) = METRIC_IDS.with(Cell::get) {
        f(&ids);
    }
}

/// Takes ownership of a block the host allocated in this VM (`proxy_on_memory_allocate`).
fn host_block(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the host wrote `size` bytes into a block of `size` bytes it allocated through
    // `proxy_on_memory_allocate`, which hands out `Vec<u8>` memory; we are its only owner.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

fn header_bytes(map_type: MapType, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the key is a valid slice; the out-pointers are valid for the call.
    let status = unsafe {
        proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    matches!(status, Status::Ok).then(|| host_block(data, size))
}

/// Invalid UTF-8 is replaced, so such a value can never match or pass a check.
fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A property of the current stream (path segments joined by NUL); None when absent or unreadable.
fn property_bytes(path: &[u8]) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the path is a valid slice; the out-pointers are valid for the call.
    let status = unsafe { proxy_get_property(path.as_ptr(), path.len(), &mut data, &mut size) };
    matches!(status, Status::Ok).then(|| host_block(data, size))
}

fn header_text(map_type: MapType, name: &str) -> Option<String> {
    header_bytes(map_type, name).map(text)
}

/// Several request headers in one hostcall: Envoy serializes the whole map once, instead of one
/// call (and one allocation in the VM) per header. The values stay where Envoy put them.
fn request_header_values(names: &[&str]) -> HeaderValues {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid for the call.
    let status =
        unsafe { proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) };
    if !matches!(status, Status::Ok) {
        return HeaderValues::default();
    }
    pick_headers(host_block(data, size), names)
}

fn u32_at(map: &[u8], at: usize) -> Option<usize> {
    let bytes = map.get(at..at.saturating_add(4))?;
    Some(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
}

/// The proxy-wasm map layout: a u32 count, a u32 length pair per entry, then each name and value
/// followed by a NUL. A repeated name's values are joined with `,` (appended to the buffer), as
/// Envoy joins them for a single-header read.
pub(crate) fn pick_headers(mut map: Vec<u8>, names: &[&str]) -> HeaderValues {
    let mut spans: [Option<Range<usize>>; HeaderValues::MAX] = Default::default();
    debug_assert!(
        names.len() <= HeaderValues::MAX,
        "more names than HeaderValues holds"
    );
    let names = &names[..names.len().min(HeaderValues::MAX)];
    let Some(count) = u32_at(&map, 0) else {
        return HeaderValues::default();
    };
    // What Envoy wrote; joined values go after it and are no part of the map.
    let serialized = map.len();
    let mut data = 4usize.saturating_add(count.saturating_mul(8));
    for i in 0..count {
        let (Some(name_len), Some(value_len)) = (u32_at(&map, 4 + i * 8), u32_at(&map, 8 + i * 8))
        else {
            // `i < count` and the table of lengths is read first: a short map ends here.
            break;
        };
        let name_end = data.saturating_add(name_len);
        let value_start = name_end.saturating_add(1);
        let value_end = value_start.saturating_add(value_len);
        let (name, value) = (data..name_end, value_start..value_end);
        data = value_end.saturating_add(1);
        if value_end > serialized {
            break;
        }
        let Some(name) = map.get(name) else {
            break;
        };
        let Some(slot) = names.iter().position(|n| n.as_bytes() == name) else {
            continue;
        };
        spans[slot] = Some(match spans[slot].take() {
            Some(existing) => {
                let start = map.len();
                map.extend_from_within(existing);
                map.push(b',');
                map.extend_from_within(value);
                start..map.len()
            }
            None => value,
        });
    }
    HeaderValues::new(map, spans)
}

fn buffer_bytes(buffer_type: BufferType, max: usize) -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid for the call.
    let status = unsafe { proxy_get_buffer_bytes(buffer_type, 0, max, &mut data, &mut size) };
    if matches!(status, Status::Ok) {
        host_block(data, size)
    } else {
        Vec::new()
    }
}

impl Host for ProxyHost {
    fn now_ms(&self) -> u64 {
        // Without a clock, every cached token reads as expired and nothing is cached.
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| {
                u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
            })
    }

    fn log(&self, level: LogLevel, message: &str) {
        let level = match level {
            LogLevel::Debug => proxy_wasm::types::LogLevel::Debug,
            LogLevel::Info => proxy_wasm::types::LogLevel::Info,
            LogLevel::Warn => proxy_wasm::types::LogLevel::Warn,
            LogLevel::Error => proxy_wasm::types::LogLevel::Error,
        };
        let _ = hostcalls::log(level, message);
    }

    fn request_header(&self, name: &str) -> Option<String> {
        header_text(MapType::HttpRequestHeaders, name)
    }

    fn request_headers(&self, names: &[&str], values: &mut HeaderValues) {
        // Envoy writes the header block into memory it has the VM allocate for it.
        *values = request_header_values(names);
    }

    fn response_header(&self, name: &str) -> Option<String> {
        header_text(MapType::HttpResponseHeaders, name)
    }

    fn response_from_upstream(&self) -> bool {
        // Envoy's router marks a response it received from the upstream `via_upstream`; a local
        // reply (this filter's own, or another filter's) carries its own details.
        property_bytes(b"response\0code_details").as_deref() == Some(b"via_upstream".as_slice())
    }

    fn route_cluster(&self) -> Option<String> {
        property_bytes(b"xds\0cluster_name").map(text)
    }

    fn set_request_header(&self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn remove_request_header(&self, name: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
    }

    fn resume_request(&self) {
        let _ = hostcalls::resume_http_request();
    }

    fn send_reply(&self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let _ = hostcalls::send_http_response(status, headers.to_vec(), Some(body));
    }

    fn switch_to(&self, context_id: u32) -> bool {
        hostcalls::set_effective_context(context_id).is_ok()
    }

    fn shared_get(&self, key: &str) -> Option<Vec<u8>> {
        hostcalls::get_shared_data(key)
            .ok()
            .and_then(|(value, _cas)| value)
    }

    fn shared_set(&self, key: &str, value: &[u8]) -> bool {
        hostcalls::set_shared_data(key, Some(value), None).is_ok()
    }

    fn shared_get_versioned(&self, key: &str) -> (Option<Vec<u8>>, u32) {
        match hostcalls::get_shared_data(key) {
            Ok((value, cas)) => (value, cas.unwrap_or(0)),
            Err(_) => (None, 0),
        }
    }

    fn shared_set_if(&self, key: &str, value: &[u8], version: u32) -> bool {
        hostcalls::set_shared_data(key, Some(value), Some(version)).is_ok()
    }

    fn dispatch(&self, callout: &Callout<'_>) -> Result<u32, DispatchError> {
        hostcalls::dispatch_http_call(
            callout.cluster,
            callout.headers.to_vec(),
            Some(callout.body),
            Vec::new(),
            callout.timeout,
        )
        .map_err(|status| match status {
            Status::BadArgument => DispatchError::UnknownCluster,
            _ => DispatchError::Refused,
        })
    }

    fn set_tick_period_ms(&self, period_ms: u64) {
        let _ = hostcalls::set_tick_period(Duration::from_millis(period_ms));
    }

    fn count(&self, counter: Counter) {
        PENDING.with(|p| {
            let mut counts = p.get();
            counts[counter.index()] += 1;
            p.set(counts);
        });
    }

    /// A failed exchange is rare: it reaches Envoy at once, not on the next tick.
    fn count_tenant_failure(&self, tenant: &str) {
        let id = TENANT_COUNTERS.with(|counters| {
            let mut counters = counters.try_borrow_mut().ok()?;
            counters.counter(tenant, |name| {
                define(proxy_wasm::types::MetricType::Counter, name)
            })
        });
        if let Some(id) = id {
            // SAFETY: plain values.
            let _ = unsafe { proxy_increment_metric(id, 1) };
        }
    }

    fn record_exchange_latency_ms(&self, ms: u64) {
        with_metric_ids(|ids| {
            // SAFETY: plain values.
            let _ = unsafe { proxy_record_metric(ids.latency, ms) };
        });
    }
}

/// The callout answer now in hand; a reset arrives with no headers, so the answer has no status.
pub fn read_call_answer(num_headers: usize, body_size: usize) -> CallAnswer {
    if num_headers == 0 {
        return CallAnswer::default();
    }
    let header = |name| header_text(MapType::HttpCallResponseHeaders, name);
    CallAnswer {
        status: header(":status").and_then(|s| s.parse().ok()),
        retry_after: header("retry-after"),
        overloaded: header("x-envoy-overloaded").is_some(),
        // One byte past the limit is enough to tell that the answer is too large.
        body: if body_size == 0 {
            Vec::new()
        } else {
            buffer_bytes(
                BufferType::HttpCallResponseBody,
                body_size.min(MAX_TOKEN_RESPONSE_BYTES + 1),
            )
        },
    }
}

#[cfg(test)]
mod tests {
    use super::pick_headers;

    fn serialize(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (n, v) in pairs {
            out.extend_from_slice(&(n.len() as u32).to_le_bytes());
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        }
        for (n, v) in pairs {
            out.extend_from_slice(n.as_bytes());
            out.push(0);
            out.extend_from_slice(v.as_bytes());
            out.push(0);
        }
        out
    }

    fn values(map: Vec<u8>, names: &[&str]) -> Vec<Option<Vec<u8>>> {
        let found = pick_headers(map, names);
        (0..names.len())
            .map(|i| found.bytes(i).map(<[u8]>::to_vec))
            .collect()
    }

    #[test]
    fn picks_the_asked_headers_from_a_serialized_map() {
        let map = serialize(&[
            (":authority", "api.example.com"),
            (":path", "/x"),
            ("authorization", "Bearer t"),
        ]);
        assert_eq!(
            values(map, &[":authority", "authorization", "missing"]),
            vec![
                Some(b"api.example.com".to_vec()),
                Some(b"Bearer t".to_vec()),
                None
            ]
        );
    }

    #[test]
    fn repeated_headers_are_joined_like_envoy_joins_them() {
        let map = serialize(&[
            ("authorization", "Bearer a"),
            ("x", "y"),
            ("authorization", "Bearer b"),
            ("x", "z"),
            ("authorization", "Bearer c"),
        ]);
        assert_eq!(
            values(map, &["x", "authorization"]),
            vec![
                Some(b"y,z".to_vec()),
                Some(b"Bearer a,Bearer b,Bearer c".to_vec())
            ]
        );
    }

    #[test]
    fn truncated_or_garbage_maps_give_what_was_whole_and_never_panic() {
        let map = serialize(&[(":authority", "api.example.com"), ("x", "y")]);
        for cut in 0..map.len() {
            let found = values(map[..cut].to_vec(), &[":authority", "x"]);
            assert!(found[0].is_none() || found[0].as_deref() == Some(&b"api.example.com"[..]));
            assert!(found[1].is_none() || found[1].as_deref() == Some(&b"y"[..]));
        }
        // A joined value is appended to the buffer: it must not pass for the rest of a cut map.
        let map = serialize(&[("x", "y"), ("x", "z"), ("a", "bcdef")]);
        for cut in 0..map.len() {
            let found = values(map[..cut].to_vec(), &["x", "a"]);
            assert!(found[1].is_none() || found[1].as_deref() == Some(&b"bcdef"[..]));
        }
        assert_eq!(values(vec![0xff; 12], &["a"]), vec![None]);
        assert_eq!(values(Vec::new(), &["a"]), vec![None]);
    }
}
