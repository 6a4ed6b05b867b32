//! The request context: each callback to `RequestFilter`, its verdict into an Envoy action.

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host_calls::{read_call_answer, ProxyHost};
use obo_core::filter::{RequestFilter, Verdict};

pub struct RequestContext {
    filter: RequestFilter,
}

impl RequestContext {
    pub fn new(filter: RequestFilter) -> Self {
        RequestContext { filter }
    }
}

impl Context for RequestContext {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let answer = read_call_answer(num_headers, body_size);
        self.filter.on_token_answer(&ProxyHost, token_id, &answer);
    }
}

// When the stream ends, on proxy_on_delete (the SDK drops the context there). The module does not
// export proxy_on_done, which would cost every request a call into the VM (see exports.json).
impl Drop for RequestContext {
    fn drop(&mut self) {
        self.filter.on_end(&ProxyHost);
    }
}

impl HttpContext for RequestContext {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        match self.filter.on_request_headers(&ProxyHost) {
            Verdict::Continue => Action::Continue,
            Verdict::Pause => Action::Pause,
        }
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        self.filter.on_response_headers(&ProxyHost);
        Action::Continue
    }
}
