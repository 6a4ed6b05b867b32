//! `Host` over the proxy-wasm hostcalls of the Envoy this filter runs in.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, MapType, Status};

use crate::exchange::CallAnswer;
use crate::host::{Callout, DispatchError, Host, LogLevel};

/// Token responses larger than this are cut, and then fail to parse.
const MAX_ANSWER_BODY: usize = 1 << 20;

pub struct ProxyHost;

impl Host for ProxyHost {
    fn now_unix(&self) -> u64 {
        // Without a clock, every cached token reads as expired and nothing is cached.
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(u64::MAX, |d| d.as_secs())
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
        hostcalls::get_map_value(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
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

    fn request_tick(&self) {
        let _ = hostcalls::set_tick_period(Duration::from_millis(1));
    }
}

/// The answer of the callout whose response callback is running now.
pub fn read_call_answer(body_size: usize) -> CallAnswer {
    let header = |name| {
        hostcalls::get_map_value(MapType::HttpCallResponseHeaders, name)
            .ok()
            .flatten()
    };
    CallAnswer {
        status: header(":status").and_then(|s| s.parse().ok()),
        retry_after: header("retry-after"),
        body: hostcalls::get_buffer(
            BufferType::HttpCallResponseBody,
            0,
            body_size.min(MAX_ANSWER_BODY),
        )
        .ok()
        .flatten()
        .unwrap_or_default(),
    }
}
