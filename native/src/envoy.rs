//! Safe calls into Envoy over the bindings in `abi`: what the shell asks of Envoy, with the
//! borrowing rules of each call in one place.

use crate::abi::{self, EnvoyBuffer, FilterEnvoyPtr, HeaderType, LogLevel, ModuleBuffer};

/// Logs under Envoy's `dynamic_modules` logger, if that level is enabled.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: plain values in and out; the message is read during the call only.
    unsafe {
        if abi::envoy_dynamic_module_callback_log_enabled(level) {
            abi::envoy_dynamic_module_callback_log(level, ModuleBuffer::of(message.as_bytes()));
        }
    }
}

/// Logs at debug level what `message` makes, making it only if that level is enabled.
pub fn debug(message: impl FnOnce() -> String) {
    // SAFETY: a plain value in and out.
    if unsafe { abi::envoy_dynamic_module_callback_log_enabled(LogLevel::DEBUG) } {
        log(LogLevel::DEBUG, &message());
    }
}

/// Calls Envoy with a stream's filter, inside one of that stream's hooks.
#[derive(Clone, Copy)]
pub struct Stream(FilterEnvoyPtr);

impl Stream {
    /// # Safety
    /// `filter` is the filter pointer Envoy passed to the hook now running, on its thread.
    pub unsafe fn new(filter: FilterEnvoyPtr) -> Stream {
        Stream(filter)
    }

    /// The first value of header `name` (lower case), copied: Envoy's buffer lives only until the
    /// hook returns or a header of the same map is set.
    pub fn header(self, map: HeaderType, name: &str) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::NULL;
        // SAFETY: self.0 is the live filter of the running hook (Stream::new); the key is read
        // during the call; `value` is written by Envoy and read at once, before anything that
        // could change the header map; a null count pointer is allowed.
        unsafe {
            let found = abi::envoy_dynamic_module_callback_http_get_header(
                self.0,
                map,
                ModuleBuffer::of(name.as_bytes()),
                &mut value,
                0,
                std::ptr::null_mut(),
            );
            (found && !value.ptr.is_null()).then(|| value.bytes().to_vec())
        }
    }

    /// The route's cluster, as Envoy's router would pick it now.
    pub fn route_cluster(self) -> Option<Vec<u8>> {
        let mut value = EnvoyBuffer::NULL;
        // SAFETY: as in `header`: the name Envoy returns belongs to the route's cluster, valid
        // during the hook; it is copied at once.
        unsafe {
            abi::envoy_dynamic_module_callback_http_get_cluster_name(self.0, &mut value)
                .then(|| value.bytes().to_vec())
        }
    }

    pub fn worker_index(self) -> u32 {
        // SAFETY: the live filter of the running hook; a plain value back.
        unsafe { abi::envoy_dynamic_module_callback_http_filter_get_worker_index(self.0) }
    }
}

impl Stream {
    /// Removes every value of request header `name`.
    pub fn remove_request_header(self, name: &str) {
        // SAFETY: the live filter of the running hook; the name is read during the call.
        unsafe {
            abi::envoy_dynamic_module_callback_http_set_header(
                self.0,
                HeaderType::REQUEST_HEADER,
                ModuleBuffer::of(name.as_bytes()),
                ModuleBuffer::NULL,
            );
        }
    }

    /// Answers the request locally with `status`, `headers` and `body` (read during the call).
    pub fn send_reply(self, status: u32, headers: &[(&str, &str)], body: &[u8]) {
        let mut headers: Vec<abi::ModuleHeader> = headers
            .iter()
            .map(|(k, v)| abi::ModuleHeader {
                key_ptr: k.as_ptr().cast(),
                key_length: k.len(),
                value_ptr: v.as_ptr().cast(),
                value_length: v.len(),
            })
            .collect();
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
}
