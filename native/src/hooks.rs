//! The hooks Envoy calls (`envoy_dynamic_module_on_*`), every one of those Envoy 1.38 to 1.40
//! looks up for an HTTP filter, so that loading never fails for a missing symbol. Those with a
//! body run it under `guard`; the rest do nothing.
//!
//! Pointers: Envoy keeps a configuration alive while any stream's filter made from it lives (each
//! filter holds it), and calls a filter's hooks on its stream's worker thread, one at a time, until
//! `on_http_filter_destroy`.

use std::ffi::{c_char, c_void};

use crate::abi::{
    self, CalloutResult, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, FilterStatus,
    LocalReplyStatus, LogLevel,
};
use crate::config::{self, FilterConfig};
use crate::envoy::{self, Stream};
use crate::filter::Filter;
use crate::guard;

type ConfigModulePtr = *const c_void;
type FilterModulePtr = *const c_void;

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_program_init() -> *const c_char {
    abi::ABI_VERSION.as_ptr()
}

/// # Safety
/// Called by Envoy on the main thread, with buffers valid until it returns.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_new(
    config_envoy: ConfigEnvoyPtr,
    _name: EnvoyBuffer,
    json: EnvoyBuffer,
) -> ConfigModulePtr {
    guard("on_http_filter_config_new", std::ptr::null(), || {
        // SAFETY: Envoy's configuration bytes live until this hook returns; `load` keeps nothing
        // borrowed from them.
        let json = unsafe { json.bytes() };
        match config::load(config_envoy, json) {
            Some(config) => Box::into_raw(Box::new(config)).cast_const().cast(),
            None => std::ptr::null(),
        }
    })
}

/// # Safety
/// `config` came from `on_http_filter_config_new`, and no filter made from it is alive.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    guard("on_http_filter_config_destroy", (), || {
        // SAFETY: made by Box::into_raw in on_http_filter_config_new, destroyed once, here.
        drop(unsafe { Box::from_raw(config.cast_mut().cast::<FilterConfig>()) });
    })
}

/// # Safety
/// `config` came from `on_http_filter_config_new` and outlives the filter made here.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_new(
    config: ConfigModulePtr,
    _filter_envoy: FilterEnvoyPtr,
) -> FilterModulePtr {
    guard("on_http_filter_new", std::ptr::null(), || {
        // SAFETY: the configuration outlives every filter made from it (module docs), so the
        // 'static borrow never outlives it in fact.
        let config: &'static FilterConfig = unsafe { &*config.cast::<FilterConfig>() };
        Box::into_raw(Box::new(Filter::new(config)))
            .cast_const()
            .cast()
    })
}

/// # Safety
/// `filter` came from `on_http_filter_new`; Envoy calls no hook of it after this one.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
    guard("on_http_filter_destroy", (), || {
        // SAFETY: made by Box::into_raw in on_http_filter_new, destroyed once, here.
        drop(unsafe { Box::from_raw(filter.cast_mut().cast::<Filter<'static>>()) });
    })
}

/// The filter behind a hook's pointers, and the hook's stream.
///
/// # Safety
/// Both pointers are those Envoy passed to the running hook of a live filter.
unsafe fn filter_of<'f>(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> (&'f mut Filter<'static>, Stream) {
    // SAFETY: the filter is live and its hooks run one at a time on one thread, so this is the
    // only reference to it while the hook runs; the stream is the running hook's (caller's word).
    unsafe {
        (
            &mut *filter.cast_mut().cast::<Filter<'static>>(),
            Stream::new(filter_envoy),
        )
    }
}

/// A request whose filter failed is answered 500, never passed on unchecked.
fn fail_closed(stream: Stream) -> FilterStatus {
    stream.send_reply(500, &[("content-type", "text/plain")], b"filter error\n");
    FilterStatus::STOP_ITERATION
}

/// # Safety
/// Called by Envoy with a live filter's pointers, on its stream's thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_headers(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    // SAFETY: Envoy's pointers for this hook (caller's word).
    let (filter, stream) = unsafe { filter_of(filter_envoy, filter) };
    guard("on_http_filter_request_headers", None, || {
        Some(filter.on_request_headers(stream))
    })
    .unwrap_or_else(|| {
        guard("fail_closed", FilterStatus::STOP_ITERATION, || {
            fail_closed(stream)
        })
    })
}

/// # Safety
/// Called by Envoy with a live filter's pointers, on its stream's thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_response_headers(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    // SAFETY: Envoy's pointers for this hook (caller's word).
    let (filter, stream) = unsafe { filter_of(filter_envoy, filter) };
    // A response the filter failed to read goes on: it was already checked on its way in.
    guard(
        "on_http_filter_response_headers",
        FilterStatus::CONTINUE,
        || filter.on_response_headers(stream),
    )
}

/// # Safety
/// Called by Envoy with a live filter's pointers, on its stream's thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_local_reply(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _status: u32,
    _details: EnvoyBuffer,
    _reset_imminent: bool,
) -> LocalReplyStatus {
    // SAFETY: Envoy's pointers for this hook (caller's word).
    let (filter, _) = unsafe { filter_of(filter_envoy, filter) };
    guard("on_http_filter_local_reply", (), || filter.on_local_reply());
    LocalReplyStatus::CONTINUE
}

/// Per-route configuration is not offered: Envoy refuses one.
#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_new(
    _name: EnvoyBuffer,
    _config: EnvoyBuffer,
) -> *const c_void {
    guard("on_http_filter_per_route_config_new", (), || {
        envoy::log(
            LogLevel::ERROR,
            "invalid configuration: per-route configuration is not supported",
        )
    });
    std::ptr::null()
}

// The hooks below do nothing (yet).

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_per_route_config_destroy(_: *const c_void) {}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    FilterStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) -> FilterStatus {
    FilterStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_body(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    FilterStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_response_trailers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) -> FilterStatus {
    FilterStatus::CONTINUE
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_stream_complete(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _callout_id: u64,
    _result: CalloutResult,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_above_write_buffer_high_watermark(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_downstream_below_write_buffer_low_watermark(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _event_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _callout_id: u64,
    _result: CalloutResult,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _body_chunks: *const EnvoyBuffer,
    _body_chunks_size: usize,
) {
}

// Streamed callouts, which this filter never starts.

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_headers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_data(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_trailers(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_complete(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_http_stream_reset(
    _: FilterEnvoyPtr,
    _: FilterModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_headers(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _headers: *const EnvoyHeader,
    _headers_size: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_data(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _data: *const EnvoyBuffer,
    _data_count: usize,
    _end_stream: bool,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_trailers(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _trailers: *const EnvoyHeader,
    _trailers_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_complete(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
) {
}

#[no_mangle]
pub extern "C" fn envoy_dynamic_module_on_http_filter_config_http_stream_reset(
    _: ConfigEnvoyPtr,
    _: ConfigModulePtr,
    _stream_id: u64,
    _reason: u32,
) {
}
