//! The hooks Envoy calls (`envoy_dynamic_module_on_*`), every one of those Envoy 1.38 to 1.40
//! looks up for an HTTP filter, so that loading never fails for a missing symbol. Those with a
//! body run it under `guard`; the rest do nothing.
//!
//! Pointers: Envoy keeps a configuration alive while any stream's filter made from it lives (each
//! filter holds it), and calls a filter's hooks on its stream's worker thread, one at a time, until
//! `on_http_filter_destroy`.

use std::cell::RefCell;
use std::ffi::{c_char, c_void};
use std::mem::MaybeUninit;

use crate::abi::{
    self, CalloutResult, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, FilterStatus,
    LocalReplyStatus, LogLevel,
};
use crate::envoy::{self, ConfigEnvoy, Stream};
use crate::filter::{After, Filter};
use crate::state::ConfigState;
use crate::{answer, config, guard, host, ticker};

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
        // borrowed from them. Envoy's configuration pointer is used until the destroy hook.
        let (json, config_envoy) = unsafe { (json.bytes(), ConfigEnvoy::new(config_envoy)) };
        let Some(state) = config::load(config_envoy, json) else {
            return std::ptr::null();
        };
        let state = Box::into_raw(state);
        // SAFETY: freed only in on_http_filter_config_destroy, which first ends the thread that
        // `start_ticker` starts (state.rs says why the 'static borrow never outlives it).
        unsafe { &*state }.start_ticker();
        state.cast_const().cast()
    })
}

/// The configuration's state behind Envoy's pointer.
///
/// # Safety
/// `config` came from `on_http_filter_config_new` and was not destroyed: Envoy keeps it until
/// no filter made from it lives, and calls its own hooks only before its destroy hook.
unsafe fn state_of(config: ConfigModulePtr) -> &'static ConfigState {
    // SAFETY: the caller's word; only shared references are ever made to it but in destroy.
    unsafe { &*config.cast::<ConfigState>() }
}

/// # Safety
/// `config` came from `on_http_filter_config_new`, and no filter made from it is alive.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_destroy(
    config: ConfigModulePtr,
) {
    guard("on_http_filter_config_destroy", (), || {
        // SAFETY: made by Box::into_raw in on_http_filter_config_new, destroyed once, here; no
        // filter of it is alive, and its ticker thread ends in shut_down before the drop.
        let mut state = unsafe { Box::from_raw(config.cast_mut().cast::<ConfigState>()) };
        state.shut_down();
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
        // SAFETY: the configuration outlives every filter made from it (module docs).
        let state = unsafe { state_of(config) };
        let mut room = SPARE_ROOM
            .try_with(|spare| spare.try_borrow_mut().ok()?.pop())
            .ok()
            .flatten()
            .unwrap_or_else(Box::new_uninit);
        room.write(Filter::new(state));
        Box::into_raw(room).cast_const().cast()
    })
}

thread_local! {
    /// Room of this thread's ended filters, each taken by a later stream's: an allocation fewer
    /// for every request. A filter's room is plain memory, freed on any thread.
    #[allow(clippy::vec_box, reason = "each box is a filter's room, handed to Envoy as it is")]
    static SPARE_ROOM: RefCell<Vec<Box<MaybeUninit<Filter>>>> = const { RefCell::new(Vec::new()) };
}

/// The most rooms a thread keeps: its busiest moments' streams allocate their own.
const MOST_SPARE_ROOMS: usize = 64;

/// # Safety
/// `filter` came from `on_http_filter_new`; Envoy calls no hook of it after this one. This may
/// run inside another hook of the same filter (a local reply it sent ends the stream), which
/// holds no reference to the filter by then (filter.rs).
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_destroy(filter: FilterModulePtr) {
    guard("on_http_filter_destroy", (), || {
        // SAFETY: made by Box::into_raw in on_http_filter_new, destroyed once, here.
        let mut room = unsafe { Box::from_raw(filter.cast_mut().cast::<MaybeUninit<Filter>>()) };
        // SAFETY: on_http_filter_new wrote the filter into its room (MaybeUninit<Filter> is laid
        // out as Filter); it is ended and dropped once, here (a panic in `end` frees the room and
        // leaks what the filter holds).
        unsafe {
            room.assume_init_ref().end();
            room.assume_init_drop();
        }
        let _ = SPARE_ROOM.try_with(|spare| match spare.try_borrow_mut() {
            Ok(mut spare) if spare.len() < MOST_SPARE_ROOMS => spare.push(room),
            _ => {}
        });
    })
}

/// The filter behind a hook's pointers, and the hook's stream.
///
/// # Safety
/// Both pointers are those Envoy passed to the running hook of a live filter; the reference is
/// used only to decide, never while the stream's actions are taken (filter.rs).
unsafe fn filter_of<'f>(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> (&'f Filter, Stream) {
    // SAFETY: the filter is live, on its own thread; its state is in cells, so a hook of it that
    // Envoy runs inside this one (a local reply's) only makes another shared reference.
    unsafe { (&*filter.cast::<Filter>(), Stream::new(filter_envoy)) }
}

/// Takes the stream's own actions, decided in a frame that has ended: Envoy may destroy the filter
/// before they are taken, so no live frame may hold a reference to it then.
fn take_after(hook: &str, stream: Stream, after: Option<After>) {
    if let Some(after) = after {
        guard(hook, (), || after.take(stream));
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
    let after = guard("on_http_filter_request_headers", None, || {
        Some(filter.on_request_headers(stream))
    });
    match after {
        Some(after) => guard(
            "on_http_filter_request_headers",
            FilterStatus::STOP_ITERATION,
            || after.take_in_request_headers(stream),
        ),
        None => guard("fail_closed", FilterStatus::STOP_ITERATION, || {
            fail_closed(stream)
        }),
    }
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
    let hook = "on_http_filter_response_headers";
    let after = guard(hook, None, || Some(filter.on_response_headers(stream)));
    take_after(hook, stream, after);
    FilterStatus::CONTINUE
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

/// `held` while the request waits for an exchange, else `CONTINUE`: Envoy delivers the body and
/// trailers to a filter that stopped at the headers, and `CONTINUE` would send the request on
/// with the caller's token.
///
/// # Safety
/// Envoy's pointers for the running hook of a live filter, on its stream's thread.
unsafe fn hold_while_waiting(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    hook: &str,
    held: FilterStatus,
) -> FilterStatus {
    // SAFETY: Envoy's pointers for this hook (caller's word).
    let (filter, _) = unsafe { filter_of(filter_envoy, filter) };
    guard(hook, held, || match filter.is_held() {
        true => held,
        false => FilterStatus::CONTINUE,
    })
}

/// # Safety
/// Called by Envoy with a live filter's pointers, on its stream's thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_body(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _end_of_stream: bool,
) -> FilterStatus {
    let hook = "on_http_filter_request_body";
    // SAFETY: Envoy's pointers for this hook (caller's word).
    unsafe { hold_while_waiting(filter_envoy, filter, hook, FilterStatus::STOP_AND_WATERMARK) }
}

/// # Safety
/// Called by Envoy with a live filter's pointers, on its stream's thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_request_trailers(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
) -> FilterStatus {
    let hook = "on_http_filter_request_trailers";
    // SAFETY: Envoy's pointers for this hook (caller's word).
    unsafe { hold_while_waiting(filter_envoy, filter, hook, FilterStatus::STOP_ITERATION) }
}

/// Other threads left actions in this stream's mailbox.
///
/// # Safety
/// Called by Envoy with a live filter's pointers, on its stream's thread.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_scheduled(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    _event_id: u64,
) {
    // SAFETY: Envoy's pointers for this hook (caller's word).
    let (filter, stream) = unsafe { filter_of(filter_envoy, filter) };
    let hook = "on_http_filter_scheduled";
    let after = guard(hook, None, || Some(filter.on_mail(stream)));
    take_after(hook, stream, after);
}

/// The answer to a token request this stream sent.
///
/// # Safety
/// Called by Envoy with a live filter's pointers, on its stream's thread, and the answer's
/// headers and body valid until it returns.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_http_callout_done(
    filter_envoy: FilterEnvoyPtr,
    filter: FilterModulePtr,
    callout_id: u64,
    result: CalloutResult,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    // An answer before the callout call returned (Envoy failed the request at once): the call
    // reports the failure, and the worker's lock is held by this very thread.
    if host::dispatching() {
        return;
    }
    // SAFETY: Envoy's pointers for this hook (caller's word).
    let (filter, stream) = unsafe { filter_of(filter_envoy, filter) };
    let hook = "on_http_filter_http_callout_done";
    let after = guard(hook, None, || {
        // SAFETY: the answer is Envoy's, valid during this hook, and copied here.
        let answer =
            unsafe { answer::read(result, headers, headers_size, body_chunks, body_chunks_size) };
        Some(filter.on_token_answer(stream, callout_id, &answer))
    });
    take_after(hook, stream, after);
}

/// The root's tick, on the main thread.
///
/// # Safety
/// Called by Envoy with a live configuration's pointers.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_scheduled(
    _config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    event_id: u64,
) {
    guard("on_http_filter_config_scheduled", (), || {
        if event_id == ticker::TICK {
            // SAFETY: the live configuration (caller's word).
            unsafe { state_of(config) }.on_tick();
        }
    });
}

/// The answer to a token request the root sent, on the main thread.
///
/// # Safety
/// Called by Envoy with a live configuration's pointers, and the answer's headers and body
/// valid until it returns.
#[no_mangle]
pub unsafe extern "C" fn envoy_dynamic_module_on_http_filter_config_http_callout_done(
    _config_envoy: ConfigEnvoyPtr,
    config: ConfigModulePtr,
    callout_id: u64,
    result: CalloutResult,
    headers: *const EnvoyHeader,
    headers_size: usize,
    body_chunks: *const EnvoyBuffer,
    body_chunks_size: usize,
) {
    if host::dispatching() {
        return;
    }
    guard("on_http_filter_config_http_callout_done", (), || {
        // SAFETY: the answer is Envoy's, valid during this hook, and copied here; the
        // configuration is live (caller's word).
        let (answer, state) = unsafe {
            (
                answer::read(result, headers, headers_size, body_chunks, body_chunks_size),
                state_of(config),
            )
        };
        state.on_root_answer(callout_id, &answer);
    });
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
