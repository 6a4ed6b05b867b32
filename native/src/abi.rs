//! The project's own bindings to Envoy's dynamic-module ABI: only the types and callbacks the
//! filter uses, written from the facts (names, argument order, types, enum values) of Envoy's
//! header `source/extensions/dynamic_modules/abi/abi.h` as released with Envoy 1.38 (ABI version
//! `v0.1.0`); no text of the header is copied here.
//!
//! Supported: Envoy 1.38.2, 1.39.3 and 1.40.0, one artifact. Why (docs/native.md has the
//! evidence): every callback bound below is exported by all three binaries (`nm -D`) with the
//! signature of the 1.38 header; the header's policy keeps a released signature or enum value
//! unchanged for at least the next minor ABI version, and 1.40's one change to a callback used here
//! (`log` gaining a source location) was withdrawn before the release in favour of a new `log_v2`.
//! The hooks Envoy looks up for an HTTP filter are the same in the three. 1.38 loads a module of
//! another ABI version with a warning. 1.36 and 1.37 are outside the window: they accept only
//! their own ABI version (a hash of their header), and lack callbacks bound here (1.36 has header
//! callbacks per map, such as `http_get_request_headers`, not `http_get_headers`; 1.37 has no
//! `http_get_cluster_name` nor `http_filter_get_worker_index`), so the dynamic loader refuses the
//! module.
//!
//! Envoy compares the string `on_program_init` returns with its own: 1.38.2 and 1.39.3 (`v0.1.0`)
//! log "matched", 1.40.0 (`v0.2.0`) logs that the module's version is deprecated and loads it.
//!
//! Borrowing: a buffer Envoy hands in (header values, the configuration, a callout's answer) is
//! valid until the hook that received it, or the callback that returned it, returns to Envoy, and a
//! header value only until a header of the same map is set. Buffers the module passes are read
//! during the call only.

use std::ffi::{c_char, c_void};

/// The ABI version this module is built against, for `envoy_dynamic_module_on_program_init`.
pub const ABI_VERSION: &std::ffi::CStr = c"v0.1.0";

/// Envoy's HTTP filter configuration (`DynamicModuleHttpFilterConfig`): valid until
/// `on_http_filter_config_destroy`; its callbacks run on the main thread.
pub type ConfigEnvoyPtr = *mut c_void;
/// Envoy's HTTP filter of one stream (`DynamicModuleHttpFilter`): valid until
/// `on_http_filter_destroy`, on that stream's worker thread only.
pub type FilterEnvoyPtr = *mut c_void;
/// A scheduler the module owns (created by `*_scheduler_new`, freed by `*_scheduler_delete`).
pub type SchedulerPtr = *mut c_void;

/// Bytes Envoy owns.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

/// Bytes the module owns, read by Envoy during the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleBuffer {
    pub ptr: *const c_char,
    pub length: usize,
}

/// One header the module passes (a local reply's, a callout's).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ModuleHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

/// One header Envoy passes (a callout's answer, a stream's headers).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EnvoyHeader {
    pub key_ptr: *const c_char,
    pub key_length: usize,
    pub value_ptr: *const c_char,
    pub value_length: usize,
}

/// C enums are `int`-sized; values from Envoy are read as numbers, never as a Rust enum, so an
/// unknown value cannot be undefined behaviour.
macro_rules! c_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $value:expr,)* }) => {
        $(#[$doc])*
        #[repr(transparent)]
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub struct $name(pub u32);
        impl $name {
            $($(#[$vdoc])* pub const $variant: $name = $name($value);)*
        }
    };
}

c_enum!(
    /// Which header map a header callback reads or writes.
    HeaderType {
        REQUEST_HEADER = 0,
        RESPONSE_HEADER = 2,
    }
);

c_enum!(
    /// Envoy's log levels (its `spdlog` levels).
    LogLevel {
        TRACE = 0,
        DEBUG = 1,
        INFO = 2,
        WARN = 3,
        ERROR = 4,
        CRITICAL = 5,
    }
);

c_enum!(
    /// Whether Envoy took a callout (`*_http_callout`).
    CalloutInit {
        SUCCESS = 0,
        MISSING_REQUIRED_HEADERS = 1,
        CLUSTER_NOT_FOUND = 2,
        DUPLICATE_CALLOUT_ID = 3,
        CANNOT_CREATE_REQUEST = 4,
    }
);

c_enum!(
    /// How a callout ended (`*_http_callout_done`); an HTTP error status is a `SUCCESS`.
    CalloutResult {
        SUCCESS = 0,
        RESET = 1,
        EXCEED_RESPONSE_BUFFER_LIMIT = 2,
    }
);

c_enum!(
    /// What a metrics callback did.
    MetricsResult {
        SUCCESS = 0,
    }
);

c_enum!(
    /// The answer of the request and response hooks: headers, body and trailers alike use 0 to
    /// go on and 1 to stop (`FilterHeadersStatus::StopIteration`, `FilterDataStatus::
    /// StopIterationAndBuffer`, `FilterTrailersStatus::StopIteration`).
    FilterStatus {
        CONTINUE = 0,
        STOP_ITERATION = 1,
        /// Body only (`FilterDataStatus::StopIterationAndWatermark`): held and buffered, with
        /// flow control instead of a 413 when the body outgrows the buffer limit.
        STOP_AND_WATERMARK = 2,
    }
);

c_enum!(
    /// The answer of `on_http_filter_local_reply`.
    LocalReplyStatus {
        CONTINUE = 0,
    }
);

// Callbacks Envoy implements. Each is exported by Envoy 1.38.2, 1.39.3 and 1.40.0.
extern "C" {
    pub fn envoy_dynamic_module_callback_log(level: LogLevel, message: ModuleBuffer);
    pub fn envoy_dynamic_module_callback_log_enabled(level: LogLevel) -> bool;
    /// Main thread only.
    pub fn envoy_dynamic_module_callback_get_concurrency() -> u32;

    /// How many headers (each value of a repeated header counts) the map has.
    pub fn envoy_dynamic_module_callback_http_get_headers_size(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
    ) -> usize;
    /// Writes every header of the map, in order, into `result`, which has room for as many as
    /// `http_get_headers_size` said.
    pub fn envoy_dynamic_module_callback_http_get_headers(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        result: *mut EnvoyHeader,
    ) -> bool;
    /// Replaces every value of `key`; a null `value.ptr` removes the header.
    pub fn envoy_dynamic_module_callback_http_set_header(
        filter: FilterEnvoyPtr,
        header_type: HeaderType,
        key: ModuleBuffer,
        value: ModuleBuffer,
    ) -> bool;
    /// Answers locally; `details` (nullable) is the response code details.
    pub fn envoy_dynamic_module_callback_http_send_response(
        filter: FilterEnvoyPtr,
        status: u32,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        details: ModuleBuffer,
    );
    pub fn envoy_dynamic_module_callback_http_filter_continue_decoding(filter: FilterEnvoyPtr);
    /// The route's cluster. (Not the attribute `xds.cluster_name`: 1.38.2 and 1.39.3 answer that
    /// one "unsupported", 1.38.2 with an error line in Envoy's log at each call.)
    pub fn envoy_dynamic_module_callback_http_get_cluster_name(
        filter: FilterEnvoyPtr,
        result: *mut EnvoyBuffer,
    ) -> bool;
    pub fn envoy_dynamic_module_callback_http_filter_get_worker_index(
        filter: FilterEnvoyPtr,
    ) -> u32;

    /// A callout from a stream; cancelled (no done hook) when the stream's filter is destroyed.
    pub fn envoy_dynamic_module_callback_http_filter_http_callout(
        filter: FilterEnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> CalloutInit;
    /// A callout from the configuration: main thread only (the configuration's callouts are kept
    /// unsynchronised, and the cluster is looked up on the calling thread); its done hook runs on
    /// the main thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_http_callout(
        config: ConfigEnvoyPtr,
        callout_id: *mut u64,
        cluster: ModuleBuffer,
        headers: *mut ModuleHeader,
        headers_size: usize,
        body: ModuleBuffer,
        timeout_ms: u64,
    ) -> CalloutInit;

    /// On the stream's worker thread; commit may be called from any thread, and an event for a
    /// stream already gone is dropped.
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_new(
        filter: FilterEnvoyPtr,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_scheduler_delete(scheduler: SchedulerPtr);
    /// Commit from any thread; `on_http_filter_config_scheduled` runs on the main thread.
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_new(
        config: ConfigEnvoyPtr,
    ) -> SchedulerPtr;
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_commit(
        scheduler: SchedulerPtr,
        event_id: u64,
    );
    pub fn envoy_dynamic_module_callback_http_filter_config_scheduler_delete(
        scheduler: SchedulerPtr,
    );

    /// Metrics are defined on the configuration (in `on_http_filter_config_new`) and counted
    /// through a stream's filter: 1.38 has no configuration-level increment.
    pub fn envoy_dynamic_module_callback_http_filter_config_define_counter(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_config_define_histogram(
        config: ConfigEnvoyPtr,
        name: ModuleBuffer,
        label_names: *mut ModuleBuffer,
        label_names_length: usize,
        id: *mut usize,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_increment_counter(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
    pub fn envoy_dynamic_module_callback_http_filter_record_histogram_value(
        filter: FilterEnvoyPtr,
        id: usize,
        label_values: *mut ModuleBuffer,
        label_values_length: usize,
        value: u64,
    ) -> MetricsResult;
}

impl ModuleBuffer {
    pub fn of(bytes: &[u8]) -> ModuleBuffer {
        ModuleBuffer {
            ptr: bytes.as_ptr().cast(),
            length: bytes.len(),
        }
    }

    /// What `http_set_header` reads as "remove".
    pub const NULL: ModuleBuffer = ModuleBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };
}

impl EnvoyHeader {
    pub const NULL: EnvoyHeader = EnvoyHeader {
        key_ptr: std::ptr::null(),
        key_length: 0,
        value_ptr: std::ptr::null(),
        value_length: 0,
    };

    /// Whether its name is `name`: the lengths first, as most headers are not the one asked for.
    ///
    /// # Safety
    /// As `parts`, for the name's buffer, during the call.
    pub unsafe fn is_named(self, name: &[u8]) -> bool {
        // SAFETY: the caller's word.
        self.key_length == name.len() && unsafe { self.parts() }.0 == name
    }

    /// The name and the value, borrowed for as long as the caller says Envoy keeps them.
    ///
    /// # Safety
    /// Each pointer is null or points to its length in bytes, valid and unchanged for `'a`.
    pub unsafe fn parts<'a>(self) -> (&'a [u8], &'a [u8]) {
        let buffer = |ptr, length| EnvoyBuffer { ptr, length };
        // SAFETY: the caller's word, for both buffers.
        unsafe {
            (
                buffer(self.key_ptr, self.key_length).bytes(),
                buffer(self.value_ptr, self.value_length).bytes(),
            )
        }
    }
}

impl EnvoyBuffer {
    pub const NULL: EnvoyBuffer = EnvoyBuffer {
        ptr: std::ptr::null(),
        length: 0,
    };

    /// The bytes, borrowed for as long as the caller says Envoy keeps them.
    ///
    /// # Safety
    /// `ptr` is null or points to `length` bytes that stay valid and unchanged for `'a`.
    pub unsafe fn bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.length == 0 {
            return &[];
        }
        // SAFETY: the caller vouches that Envoy keeps these `length` bytes for 'a (see above).
        unsafe { std::slice::from_raw_parts(self.ptr.cast(), self.length) }
    }
}
