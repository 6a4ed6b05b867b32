//! A proxy-wasm HTTP filter that lets every request through untouched: the floor every Wasm filter
//! pays. Its plugin configuration may name hostcalls to make on each request, and it makes those
//! and nothing else, so that `make bench` can price each one:
//!
//! - `pairs`: the request headers, all in one `proxy_get_header_map_pairs`, kept as the one block
//!   Envoy writes (as entra-obo-filter keeps them), not split into a `String` per name and value
//!   as the SDK's wrapper does;
//! - `header`: the request's `authorization` header alone;
//! - `clock`: the current time;
//! - `replace`: set the request's `authorization`;
//! - `response`: the response's `www-authenticate` header.
//!
//! `hostcalls` names the four that entra-obo-filter's cache hit makes (`pairs,clock,replace,response`),
//! and `size=N` makes `replace` write a token of N bytes (default: a short one), as long as the
//! one the filter writes.

use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, Status};

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(
        map_type: MapType,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> Status;
}

/// The request headers as the block Envoy serialized them into (allocated through the SDK's
/// `proxy_on_memory_allocate`, which hands out `Vec<u8>` memory).
fn request_header_block() -> Vec<u8> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid for the call; the block is ours once it returns.
    unsafe {
        match proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size) {
            Status::Ok if !data.is_null() => Vec::from_raw_parts(data, size, size),
            _ => Vec::new(),
        }
    }
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(NoopRoot { calls: Calls::default(), authorization: Rc::from("Bearer static-token") })
    });
}}

#[derive(Clone, Copy, Default)]
struct Calls {
    pairs: bool,
    header: bool,
    clock: bool,
    replace: bool,
    response: bool,
}

impl Calls {
    /// The calls, and the value `replace` writes.
    fn parse(configuration: &str) -> (Calls, Option<Rc<str>>) {
        let configuration = configuration.replace("hostcalls", "pairs,clock,replace,response");
        let mut calls = Calls::default();
        let mut authorization = None;
        for name in configuration.split(',').filter(|n| !n.is_empty()) {
            if let Some(size) = name.strip_prefix("size=") {
                let size = size.parse().expect("noop filter: size=N");
                authorization = Some(format!("Bearer {}", "t".repeat(size)).into());
                continue;
            }
            match name {
                "pairs" => calls.pairs = true,
                "header" => calls.header = true,
                "clock" => calls.clock = true,
                "replace" => calls.replace = true,
                "response" => calls.response = true,
                other => panic!("noop filter: unknown hostcall {other}"),
            }
        }
        (calls, authorization)
    }
}

struct NoopRoot {
    calls: Calls,
    authorization: Rc<str>,
}

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let configuration = self.get_plugin_configuration().unwrap_or_default();
        let (calls, authorization) =
            Calls::parse(std::str::from_utf8(&configuration).unwrap_or(""));
        self.calls = calls;
        if let Some(authorization) = authorization {
            self.authorization = authorization;
        }
        true
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop {
            calls: self.calls,
            authorization: self.authorization.clone(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Noop {
    calls: Calls,
    authorization: Rc<str>,
}

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let calls = self.calls;
        if calls.pairs {
            std::hint::black_box(request_header_block());
        }
        if calls.header {
            std::hint::black_box(self.get_http_request_header_bytes("authorization"));
        }
        if calls.clock {
            std::hint::black_box(self.get_current_time());
        }
        if calls.replace {
            self.set_http_request_header("authorization", Some(&self.authorization));
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.calls.response {
            std::hint::black_box(self.get_http_response_header_bytes("www-authenticate"));
        }
        Action::Continue
    }
}
