//! Safe calls into Envoy over the bindings in `abi`: what the shell asks of Envoy, with the
//! borrowing rules of each call in one place.

use std::mem::MaybeUninit;
use std::ops::Range;

use crate::abi::{
    self, CalloutInit, ConfigEnvoyPtr, EnvoyBuffer, EnvoyHeader, FilterEnvoyPtr, HeaderType,
    LogLevel, ModuleBuffer, ModuleHeader, SchedulerPtr,
};

/// Logs under Envoy's `dynamic_modules` logger, if that level is enabled, named as the Wasm
/// build's lines are (`entra_obo: ...`): Envoy names no module in that logger's lines.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: plain values in and out; the message is read during the call only.
    unsafe {
        if abi::envoy_dynamic_module_callback_log_enabled(level) {
            let line = format!("entra_obo: {message}");
            abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(line.as_bytes()));
        }
    }
}

/// Headers as Envoy reads them from the module: pointers into `pairs`, which must outlive the use.
fn module_headers(pairs: &[(&str, &str)]) -> Vec<ModuleHeader> {
    pairs
        .iter()
        .map(|(k, v)| ModuleHeader {
            key_ptr: k.as_ptr().cast(),
            key_length: k.len(),
            value_ptr: v.as_ptr().cast(),
            value_length: v.len(),
        })
        .collect()
}

/// A token request as Envoy takes it: the core's `Callout`, pseudo-headers included.
pub struct Request<'a> {
    pub cluster: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    pub timeout_ms: u64,
}

/// Hands `request` to one of Envoy's callout callbacks (`send`), which copies the cluster name,
/// headers and body into its own request during the call and writes the callout's id.
fn call_out(
    request: &Request<'_>,
    send: impl FnOnce(
        *mut u64,
        ModuleBuffer,
        *mut ModuleHeader,
        usize,
        ModuleBuffer,
        u64,
    ) -> CalloutInit,
) -> Result<u64, CalloutInit> {
    let mut headers = module_headers(request.headers);
    let mut id = 0u64;
    let init = send(
        &mut id,
        ModuleBuffer::of(request.cluster.as_bytes()),
        headers.as_mut_ptr(),
        headers.len(),
        ModuleBuffer::of(request.body),
        request.timeout_ms,
    );
    if init == CalloutInit::SUCCESS {
        Ok(id)
    } else {
        Err(init)
    }
}

/// Calls Envoy with a stream's filter, inside one of that stream's hooks.
#[derive(Clone, Copy)]
pub struct Stream(FilterEnvoyPtr);

impl Stream {
    /// # Safety
    /// `filter` is the filter pointer Envoy passed to the hook now running, on its thread, and the
    /// value is used only until that hook returns.
    pub unsafe fn new(filter: FilterEnvoyPtr) -> Stream {
        Stream(filter)
    }

    /// Appends each header of `names` (lower case) to `out`, and puts where its value is in
    /// `spans` (None: the request has no such header). A repeated header's values are joined
    /// with `,` as the Wasm host joins them, so two `Authorization` headers never pass for one.
    ///
    /// One call to Envoy for every name: it hands over the whole map without copying or
    /// allocating, where asking for a header by name makes it build a lower-case key each time.
    pub fn append_headers(
        self,
        map: HeaderType,
        names: &[&str],
        out: &mut Vec<u8>,
        spans: &mut [Option<Range<usize>>],
    ) {
        const ON_STACK: usize = 64;
        let mut on_stack = [const { MaybeUninit::<EnvoyHeader>::uninit() }; ON_STACK];
        let mut on_heap = Vec::new();
        // SAFETY: the live filter of the running hook; Envoy writes as many headers as it just
        // counted into room for that many (nothing changes the map between the two calls), and
        // only those are read. Its buffers live until the hook returns or a header of the map is
        // set: every value is copied into `out` before this returns, and nothing is set meanwhile.
        unsafe {
            let count = abi::envoy_dynamic_module_callback_http_get_headers_size(self.0, map);
            let room = if count <= ON_STACK {
                on_stack.as_mut_ptr().cast::<EnvoyHeader>()
            } else {
                on_heap.resize(count, EnvoyHeader::NULL);
                on_heap.as_mut_ptr()
            };
            if count == 0 || !abi::envoy_dynamic_module_callback_http_get_headers(self.0, map, room)
            {
                return;
            }
            let headers = std::slice::from_raw_parts(room, count);
            for (span, name) in spans.iter_mut().zip(names) {
                let start = out.len();
                let mut found = false;
                // Envoy keeps every header name in lower case.
                for header in headers.iter().filter(|h| h.is_named(name.as_bytes())) {
                    if found {
                        out.push(b',');
                    }
                    out.extend_from_slice(header.parts().1);
                    found = true;
                }
                *span = found.then_some(start..out.len());
            }
        }
    }

    /// Header `name`, copied (see `append_headers`).
    pub fn header(self, map: HeaderType, name: &str) -> Option<Vec<u8>> {
        let (mut value, mut span) = (Vec::new(), [None]);
        self.append_headers(map, &[name], &mut value, &mut span);
        span[0].is_some().then_some(value)
    }

    /// Replaces every value of request header `name`; None removes it.
    pub fn set_request_header(self, name: &str, value: Option<&str>) {
        let value = value.map_or(ModuleBuffer::NULL, |v| ModuleBuffer::of(v.as_bytes()));
        // SAFETY: the live filter of the running hook; name and value are read during the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.0,
                HeaderType::REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                value,
            );
        }
    }

    /// Lets a request held by `StopIteration` go on. Envoy may run later filters, the router and
    /// even a local reply (and so this stream's other hooks) before this returns.
    pub fn continue_decoding(self) {
        // SAFETY: the live filter of the running hook.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_continue_decoding(self.0) }
    }

    /// The route's cluster, as Envoy's router would pick it now.
    pub fn route_cluster(self) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::NULL;
        // SAFETY: as in `append_headers`: the name Envoy returns belongs to the route's cluster,
        // valid during the hook; it is copied at once.
        unsafe {
            abi::envoy_dynamic_module_callback_http_get_cluster_name(self.0, &mut value)
                .then(|| value.bytes().to_vec())
        }
    }

    /// Answers the request locally with `status`, `headers` and `body`. Envoy runs the encoder
    /// filters (this stream's response hooks too) and may destroy this stream's filter before it
    /// returns: nothing of the filter is used after this call.
    pub fn send_reply(self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut headers = module_headers(headers);
        // SAFETY: the live filter of the running hook; Envoy copies the headers and the body
        // during the call, while `headers`, `body` and the strings they point to are alive; a
        // null details buffer is allowed.
        unsafe {
            abi::envoy_dynamic_module_callback_http_send_response(
                self.0,
                status,
                headers.as_mut_ptr(),
                headers.len(),
                ModuleBuffer::of(body),
                ModuleBuffer::NULL,
            );
        }
    }

    /// Sends a callout from this stream; Envoy's id for it, whose answer comes to
    /// `on_http_filter_http_callout_done` on this thread (never, if the stream goes first).
    pub fn callout(self, request: &Request<'_>) -> Result<u64, CalloutInit> {
        // SAFETY: the live filter of the running hook; the rest as `call_out` says.
        call_out(
            request,
            |id, cluster, headers, count, body, timeout| unsafe {
                abi::envoy_dynamic_module_callback_http_filter_http_callout(
                    self.0, id, cluster, headers, count, body, timeout,
                )
            },
        )
    }

    /// A scheduler of this stream, to be committed from any thread.
    pub fn scheduler(self) -> Option<StreamScheduler> {
        // SAFETY: the live filter of the running hook, on its own thread.
        let ptr = unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_new(self.0) };
        (!ptr.is_null()).then_some(StreamScheduler(ptr))
    }

    pub fn increment_counter(self, id: usize, label: Option<&str>, by: u64) {
        let mut labels = label.map(|l| [ModuleBuffer::of(l.as_bytes())]);
        let (ptr, len) = labels
            .as_mut()
            .map_or((std::ptr::null_mut(), 0), |l| (l.as_mut_ptr(), l.len()));
        // SAFETY: the live filter of the running hook; the label values are read during the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_increment_counter(
                self.0, id, ptr, len, by,
            );
        }
    }

    pub fn record_histogram(self, id: usize, value: u64) {
        // SAFETY: the live filter of the running hook; no labels.
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(
                self.0,
                id,
                std::ptr::null_mut(),
                0,
                value,
            );
        }
    }
}

/// A stream's scheduler: committed from any thread, deleted on the stream's thread when its
/// filter is destroyed.
pub struct StreamScheduler(SchedulerPtr);

// SAFETY: Envoy's header allows committing a stream's scheduler from any thread; deletion happens
// once, in the filter's destroy hook on its own thread, under the lock that guards commits.
unsafe impl Send for StreamScheduler {}

impl StreamScheduler {
    /// Has Envoy call `on_http_filter_scheduled` on the stream's thread (dropped if it is gone).
    pub fn commit(&self, event_id: u64) {
        // SAFETY: a live scheduler (deleted only by `delete`, which consumes it).
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_commit(self.0, event_id) }
    }

    pub fn delete(self) {
        // SAFETY: made by scheduler_new, deleted once, here.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_scheduler_delete(self.0) }
    }
}

/// Calls Envoy with a filter configuration's pointer.
#[derive(Clone, Copy)]
pub struct ConfigEnvoy(ConfigEnvoyPtr);

// SAFETY: Envoy's configuration lives until `on_http_filter_config_destroy`, and every method
// below that is not safe on another thread says so (and is only called on the main thread).
unsafe impl Send for ConfigEnvoy {}
unsafe impl Sync for ConfigEnvoy {}

impl ConfigEnvoy {
    /// # Safety
    /// `config` is the pointer `on_http_filter_config_new` received, used only until
    /// `on_http_filter_config_destroy`.
    pub unsafe fn new(config: ConfigEnvoyPtr) -> ConfigEnvoy {
        ConfigEnvoy(config)
    }

    /// Defines a counter (with these label names), in `on_http_filter_config_new` only.
    pub fn define_counter(self, name: &str, labels: &[&str]) -> Option<usize> {
        let mut labels: Vec<ModuleBuffer> = labels
            .iter()
            .map(|l| ModuleBuffer::of(l.as_bytes()))
            .collect();
        let mut id = 0usize;
        // SAFETY: the live configuration, on the main thread; name and labels read during the
        // call; `id` written during it.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_counter(
                self.0,
                ModuleBuffer::of(name.as_bytes()),
                labels.as_mut_ptr(),
                labels.len(),
                &mut id,
            )
        };
        (result == abi::MetricsResult::SUCCESS).then_some(id)
    }

    pub fn define_histogram(self, name: &str) -> Option<usize> {
        let mut id = 0usize;
        // SAFETY: as in `define_counter`, without labels.
        let result = unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_define_histogram(
                self.0,
                ModuleBuffer::of(name.as_bytes()),
                std::ptr::null_mut(),
                0,
                &mut id,
            )
        };
        (result == abi::MetricsResult::SUCCESS).then_some(id)
    }

    /// A callout from the configuration: on the main thread only, whose answer comes to
    /// `on_http_filter_config_http_callout_done`, on the main thread too.
    pub fn callout(self, request: &Request<'_>) -> Result<u64, CalloutInit> {
        // SAFETY: the live configuration, on the main thread (the caller's word); the rest as
        // `call_out` says.
        call_out(
            request,
            |id, cluster, headers, count, body, timeout| unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_http_callout(
                    self.0, id, cluster, headers, count, body, timeout,
                )
            },
        )
    }

    /// The configuration's scheduler, made in `on_http_filter_config_new`.
    pub fn scheduler(self) -> Option<ConfigScheduler> {
        // SAFETY: the live configuration, on the main thread.
        let ptr =
            unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(self.0) };
        (!ptr.is_null()).then_some(ConfigScheduler(ptr))
    }
}

/// Envoy's worker threads (`--concurrency`), read on the main thread.
pub fn concurrency() -> u32 {
    // SAFETY: a plain value; called in `on_http_filter_config_new`, on the main thread.
    unsafe { abi::envoy_dynamic_module_callback_get_concurrency() }
}

/// The configuration's scheduler: committed from any thread; `on_http_filter_config_scheduled`
/// runs on the main thread.
pub struct ConfigScheduler(SchedulerPtr);

// SAFETY: Envoy's header allows committing a configuration's scheduler from any thread; it is
// deleted once, at the configuration's destroy, after the one other thread using it has ended.
unsafe impl Send for ConfigScheduler {}
unsafe impl Sync for ConfigScheduler {}

impl ConfigScheduler {
    pub fn commit(&self, event_id: u64) {
        // SAFETY: a live scheduler (deleted only by `delete`, which consumes it).
        unsafe {
            abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(self.0, event_id)
        }
    }

    pub fn delete(self) {
        // SAFETY: made by config_scheduler_new, deleted once, here.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.0) }
    }
}
