//! An Envoy dynamic-module HTTP filter that does nothing but the Envoy calls its configuration
//! names: the least a native filter making the cache hit's calls can cost. Written against the
//! same ABI (`v0.1.0`, Envoy 1.38 to 1.40) as `native/`, declaring only what it calls; it keeps no
//! state per stream (the filter pointer Envoy gets back is the configuration's).
//!
//! Configuration: a comma-separated list of calls, or `hit` for all those the native build's hit
//! makes with a target by host. `headers` reads the request headers in one call, as the hit does,
//! and `lookups` reads the four it needs one by one instead, `header` only `authorization`;
//! `cluster` reads the route's cluster; `set` replaces `authorization`; `route` clears the route
//! cache; `counter` increments a counter; `response` reads the response headers in one call;
//! `size=N` makes `set` write a token of N bytes (default: a short one).

use std::ffi::{c_char, c_void};

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Buffer {
    ptr: *const c_char,
    length: usize,
}

impl Buffer {
    const NULL: Buffer = Buffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    fn of(bytes: &[u8]) -> Buffer {
        Buffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }
}

type Ptr = *mut c_void;
const REQUEST_HEADER: u32 = 0;
const RESPONSE_HEADER: u32 = 2;

extern "C" {
    fn envoy_dynamic_module_callback_http_get_header(
        filter: Ptr,
        header_type: u32,
        key: Buffer,
        result: *mut Buffer,
        index: usize,
        count: *mut usize,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_set_header(
        filter: Ptr,
        header_type: u32,
        key: Buffer,
        value: Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_get_headers_size(filter: Ptr, header_type: u32) -> usize;
    fn envoy_dynamic_module_callback_http_get_headers(
        filter: Ptr,
        header_type: u32,
        result: *mut [Buffer; 2],
    ) -> bool;
    fn envoy_dynamic_module_callback_http_clear_route_cache(filter: Ptr);
    fn envoy_dynamic_module_callback_http_get_cluster_name(
        filter: Ptr,
        result: *mut Buffer,
    ) -> bool;
    fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: Ptr,
        name: Buffer,
        label_names: *mut Buffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> u32;
    fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: Ptr,
        id: usize,
        label_values: *mut Buffer,
        label_values_length: usize,
        value: u64,
    ) -> u32;
}

const HEADER: u32 = 1;
const LOOKUPS: u32 = 2;
const CLUSTER: u32 = 4;
const SET: u32 = 8;
const ROUTE: u32 = 16;
const COUNTER: u32 = 32;
const RESPONSE: u32 = 64;
const HEADERS: u32 = 128;

/// What a configuration asks for; never freed (a benchmark's Envoy makes a handful).
struct Calls {
    calls: u32,
    counter: usize,
    /// What `set` writes.
    authorization: Vec<u8>,
}

/// The header's first value, read as the native build reads one (value and count).
fn read(filter: Ptr, map: u32, name: &str) -> usize {
    let (mut value, mut count) = (Buffer::NULL, 0usize);
    // SAFETY: Envoy's filter of the running hook; the key is read during the call.
    unsafe {
        envoy_dynamic_module_callback_http_get_header(
            filter,
            map,
            Buffer::of(name.as_bytes()),
            &mut value,
            0,
            &mut count,
        )
    };
    std::hint::black_box(value.length + count)
}

/// Every header of the map, in one call (as the native build reads them).
fn all(filter: Ptr, map: u32) {
    let mut headers = [[Buffer::NULL; 2]; 64];
    // SAFETY: Envoy's filter of the running hook; it writes as many headers as it counts, at most
    // the 64 there is room for here (the benchmark sends fewer).
    unsafe {
        let size = envoy_dynamic_module_callback_http_get_headers_size(filter, map);
        if size <= headers.len() {
            envoy_dynamic_module_callback_http_get_headers(filter, map, headers.as_mut_ptr());
        }
    }
    std::hint::black_box(&headers);
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    c"v0.1.0".as_ptr()
}

/// # Safety
/// Envoy's configuration and its bytes, valid during the call.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: Ptr,
    _name: Buffer,
    config: Buffer,
) -> *const c_void {
    let text = if config.ptr.is_null() {
        &[][..]
    } else {
        // SAFETY: Envoy's bytes, valid during this call.
        unsafe { std::slice::from_raw_parts(config.ptr.cast::<u8>(), config.length) }
    };
    let text = std::str::from_utf8(text)
        .unwrap_or("?")
        .replace("hit", "headers,set,counter,response");
    let mut calls = 0;
    let mut authorization = b"Bearer static-token".to_vec();
    for name in text.split(',').filter(|n| !n.is_empty()) {
        if let Some(size) = name.strip_prefix("size=") {
            let Ok(size) = size.parse::<usize>() else {
                return std::ptr::null();
            };
            authorization = format!("Bearer {}", "t".repeat(size)).into_bytes();
            continue;
        }
        calls |= match name {
            "header" => HEADER,
            "lookups" => LOOKUPS,
            "cluster" => CLUSTER,
            "set" => SET,
            "route" => ROUTE,
            "counter" => COUNTER,
            "response" => RESPONSE,
            "headers" => HEADERS,
            _ => return std::ptr::null(),
        };
    }
    let mut counter = 0;
    if calls & COUNTER != 0 {
        // SAFETY: Envoy's configuration, in its config-new hook; the name is read during the call.
        unsafe {
            envoy_dynamic_module_callback_http_filter_config_define_counter(
                config_envoy,
                Buffer::of(b"bare_native_hits"),
                std::ptr::null_mut(),
                0,
                &mut counter,
            )
        };
    }
    Box::into_raw(Box::new(Calls {
        calls,
        counter,
        authorization,
    }))
    .cast_const()
    .cast()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: *const c_void,
    _: Ptr,
) -> *const c_void {
    config
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_destroy(_: *const c_void) {}

/// # Safety
/// Envoy's filter of this stream, and the configuration's `Calls` as the module's filter.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter: Ptr,
    calls: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: made in config_new, never freed.
    let Calls {
        calls,
        counter,
        authorization,
    } = unsafe { &*calls.cast::<Calls>() };
    if calls & LOOKUPS != 0 {
        for name in [":authority", ":path", "authorization", "x-request-id"] {
            read(filter, REQUEST_HEADER, name);
        }
    } else if calls & HEADER != 0 {
        read(filter, REQUEST_HEADER, "authorization");
    }
    if calls & HEADERS != 0 {
        all(filter, REQUEST_HEADER);
    }
    // SAFETY (each call): Envoy's filter of the running hook; buffers read during the call.
    if calls & CLUSTER != 0 {
        let mut name = Buffer::NULL;
        unsafe { envoy_dynamic_module_callback_http_get_cluster_name(filter, &mut name) };
        std::hint::black_box(name.length);
    }
    if calls & SET != 0 {
        unsafe {
            envoy_dynamic_module_callback_http_set_header(
                filter,
                REQUEST_HEADER,
                Buffer::of(b"authorization"),
                Buffer::of(authorization),
            )
        };
    }
    if calls & ROUTE != 0 {
        unsafe { envoy_dynamic_module_callback_http_clear_route_cache(filter) };
    }
    if calls & COUNTER != 0 {
        unsafe {
            envoy_dynamic_module_callback_http_filter_increment_counter(
                filter,
                *counter,
                std::ptr::null_mut(),
                0,
                1,
            )
        };
    }
    0
}

/// # Safety
/// As for the request headers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter: Ptr,
    calls: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    // SAFETY: made in config_new, never freed.
    let calls = unsafe { &*calls.cast::<Calls>() }.calls;
    if calls & RESPONSE != 0 {
        all(filter, RESPONSE_HEADER);
    }
    0
}

// Every other hook Envoy 1.38 to 1.40 looks up for an HTTP filter, doing nothing.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    _: Ptr,
    _: *const c_void,
    _status: u32,
    _details: Buffer,
    _reset_imminent: bool,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: Ptr,
    _: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _: Ptr,
    _: *const c_void,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _: Ptr,
    _: *const c_void,
    _end_of_stream: bool,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: Ptr,
    _: *const c_void,
) -> u32 {
    0
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(_: Ptr, _: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(_: Ptr, _: *const c_void, _: u64) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: Ptr,
    _: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const c_void,
    _headers_size: usize,
    _body: *const c_void,
    _body_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _: Ptr,
    _: *const c_void,
    _: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _: Ptr,
    _: *const c_void,
    _callout_id: u64,
    _result: u32,
    _headers: *const c_void,
    _headers_size: usize,
    _body: *const c_void,
    _body_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: Buffer,
    _config: Buffer,
) -> *const c_void {
    std::ptr::null()
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: Ptr,
    _: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: Ptr,
    _: *const c_void,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _headers: *const c_void,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _data: *const c_void,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _trailers: *const c_void,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _headers: *const c_void,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _data: *const c_void,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _trailers: *const c_void,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _: Ptr,
    _: *const c_void,
    _stream_id: u64,
    _reason: u32,
) {
}
