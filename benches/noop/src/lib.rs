//! A proxy-wasm HTTP filter that lets every request through untouched: the floor every Wasm filter
//! pays. With the plugin configuration `hostcalls` it also makes the hostcalls of
//! entra-obo-filter's cache hit, and nothing else: the floor for a filter that must read the
//! request headers, the clock, set `Authorization` and look at one response header.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot { hostcalls: false }) });
}}

struct NoopRoot {
    hostcalls: bool,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        self.hostcalls =
            self.get_plugin_configuration().as_deref() == Some(b"hostcalls".as_slice());
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            hostcalls: self.hostcalls,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    hostcalls: bool,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.hostcalls {
            let headers = self.get_http_request_headers_bytes();
            std::hint::black_box((headers, self.get_current_time()));
            self.set_http_request_header("authorization", Some("Bearer static-token"));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.hostcalls {
            std::hint::black_box(self.get_http_response_header_bytes("www-authenticate"));
        }
        Action::Continue
    }
}
