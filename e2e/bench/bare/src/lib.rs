//! A proxy-wasm HTTP filter with no SDK: the least a Wasm filter can cost in Envoy. It exports
//! `proxy_on_request_headers` and `proxy_on_response_headers` and no per-stream create or delete
//! callback, so Envoy crosses into the VM twice per request. Its plugin configuration names the
//! hostcalls to make, as `e2e/bench/noop` does (`hostcalls`: the four of entra-obo-filter's hit;
//! `size=N`: `replace` writes a token of N bytes).

use std::cell::Cell;

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_buffer_bytes(
        kind: u32,
        start: usize,
        max: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, data: *mut *mut u8, size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        data: *mut *mut u8,
        size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_get_current_time_nanoseconds(time: *mut u64) -> u32;
}

const REQUEST_HEADERS: u32 = 0;
const RESPONSE_HEADERS: u32 = 2;
const PLUGIN_CONFIGURATION: u32 = 7;

thread_local! {
    static CALLS: Cell<u8> = const { Cell::new(0) };
    /// What `replace` writes.
    static AUTHORIZATION: std::cell::RefCell<Vec<u8>> =
        std::cell::RefCell::new(b"Bearer static-token".to_vec());
}
const PAIRS: u8 = 1;
const HEADER: u8 = 2;
const CLOCK: u8 = 4;
const REPLACE: u8 = 8;
const RESPONSE: u8 = 16;

/// Memory Envoy asks for to place what a hostcall returns; freed by `take`.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let mut v: Vec<u8> = Vec::with_capacity(size.max(1));
    let p = v.as_mut_ptr();
    std::mem::forget(v);
    p
}

fn take(data: *mut u8, size: usize) -> Vec<u8> {
    if data.is_null() {
        return Vec::new();
    }
    // SAFETY: Envoy placed `size` bytes in memory from proxy_on_memory_allocate(size).
    unsafe { Vec::from_raw_parts(data, size, size.max(1)) }
}

/// One header's value, read with `proxy_get_header_map_value`.
fn header(map: u32, key: &[u8]) -> Vec<u8> {
    let (mut data, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: a valid key and out-pointers valid for the call.
    unsafe { proxy_get_header_map_value(map, key.as_ptr(), key.len(), &mut data, &mut len) };
    take(data, len)
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context: u32, _size: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(_context: u32, size: u32) -> u32 {
    let (mut data, mut len) = (std::ptr::null_mut(), 0);
    // SAFETY: valid out-pointers.
    unsafe { proxy_get_buffer_bytes(PLUGIN_CONFIGURATION, 0, size as usize, &mut data, &mut len) };
    let configuration = take(data, len);
    let configuration = std::str::from_utf8(&configuration)
        .unwrap_or("")
        .replace("hostcalls", "pairs,clock,replace,response");
    let mut calls = 0;
    for name in configuration.split(',').filter(|n| !n.is_empty()) {
        if let Some(size) = name.strip_prefix("size=") {
            let Ok(size) = size.parse::<usize>() else {
                return 0;
            };
            let value = format!("Bearer {}", "t".repeat(size)).into_bytes();
            AUTHORIZATION.with(|a| *a.borrow_mut() = value);
            continue;
        }
        calls |= match name {
            "pairs" => PAIRS,
            "header" => HEADER,
            "clock" => CLOCK,
            "replace" => REPLACE,
            "response" => RESPONSE,
            _ => return 0,
        };
    }
    CALLS.with(|c| c.set(calls));
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(_context: u32, _headers: u32, _end: u32) -> u32 {
    let calls = CALLS.with(|c| c.get());
    // SAFETY (each call): valid pointers and lengths, out-pointers valid for the call.
    if calls & PAIRS != 0 {
        let (mut data, mut len) = (std::ptr::null_mut(), 0);
        unsafe { proxy_get_header_map_pairs(REQUEST_HEADERS, &mut data, &mut len) };
        std::hint::black_box(take(data, len));
    }
    if calls & HEADER != 0 {
        std::hint::black_box(header(REQUEST_HEADERS, b"authorization"));
    }
    if calls & CLOCK != 0 {
        let mut now = 0u64;
        unsafe { proxy_get_current_time_nanoseconds(&mut now) };
        std::hint::black_box(now);
    }
    if calls & REPLACE != 0 {
        let key = b"authorization";
        AUTHORIZATION.with(|value| {
            let value = value.borrow();
            unsafe {
                proxy_replace_header_map_value(
                    REQUEST_HEADERS,
                    key.as_ptr(),
                    key.len(),
                    value.as_ptr(),
                    value.len(),
                )
            };
        });
    }
    0
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(_context: u32, _headers: u32, _end: u32) -> u32 {
    if CALLS.with(|c| c.get()) & RESPONSE != 0 {
        std::hint::black_box(header(RESPONSE_HEADERS, b"www-authenticate"));
    }
    0
}
