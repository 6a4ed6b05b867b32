//! `Host` over the proxy-wasm hostcalls of the Envoy this filter runs in.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use crate::exchange::CallAnswer;
use crate::host::{Callout, DispatchError, Host, LogLevel};
use crate::token_response::MAX_TOKEN_RESPONSE_BYTES;

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
    fn proxy_get_buffer_bytes(
        buffer_type: BufferType,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> Status;
}

/// Takes ownership of a block the host allocated in this VM (through the SDK's
/// `proxy_on_memory_allocate`).
fn host_block(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: the host wrote `size` bytes into a block of `size` bytes it allocated through
    // `proxy_on_memory_allocate`, which hands out `Vec<u8>` memory; we are its only owner.
    unsafe { Vec::from_raw_parts(data, size, size) }
}

/// A header value as bytes; None when it is absent or the map cannot be read.
fn header_bytes(map_type: MapType, name: &str) -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the key is a valid slice; the out-pointers are valid for the call.
    let status = unsafe {
        proxy_get_header_map_value(map_type, name.as_ptr(), name.len(), &mut data, &mut size)
    };
    matches!(status, Status::Ok).then(|| host_block(data, size))
}

/// A header value as text (invalid UTF-8 replaced, so it can never match or pass a check).
fn header_text(map_type: MapType, name: &str) -> Option<String> {
    header_bytes(map_type, name).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Up to `max` bytes of a buffer; empty when there is none.
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

    fn response_header(&self, name: &str) -> Option<String> {
        header_text(MapType::HttpResponseHeaders, name)
    }

    fn set_request_header(&self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
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
}

/// The answer of the callout whose response callback is running now. A reset arrives with no
/// headers at all: then nothing is read and the answer has no status.
pub fn read_call_answer(num_headers: usize, body_size: usize) -> CallAnswer {
    if num_headers == 0 {
        return CallAnswer::default();
    }
    let header = |name| header_text(MapType::HttpCallResponseHeaders, name);
    CallAnswer {
        status: header(":status").and_then(|s| s.parse().ok()),
        retry_after: header("retry-after"),
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
