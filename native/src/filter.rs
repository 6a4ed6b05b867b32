//! One stream's filter. For now it forwards every request without its `Authorization` (fail
//! closed: no token is exchanged yet, so none may leave) and says at debug level what it read (which exercises the header, cluster and local-reply calls on every
//! supported Envoy); the decisions of `obo_core` come in the next step.

use crate::abi::{FilterStatus, HeaderType};
use crate::config::FilterConfig;
use crate::envoy::{self, Stream};

pub struct Filter<'c> {
    #[allow(dead_code)]
    config: &'c FilterConfig,
    /// A local reply (this filter's, another filter's, the router's) was sent on this stream:
    /// whatever response follows is not the upstream's.
    local_reply: bool,
}

fn text(bytes: Option<Vec<u8>>) -> String {
    bytes.map_or_else(|| "-".into(), |b| String::from_utf8_lossy(&b).into_owned())
}

impl<'c> Filter<'c> {
    pub fn new(config: &'c FilterConfig) -> Self {
        Filter {
            config,
            local_reply: false,
        }
    }

    pub fn on_request_headers(&mut self, stream: Stream) -> FilterStatus {
        envoy::debug(|| {
            format!(
                "request for {} on worker {}: route cluster {}",
                text(stream.header(HeaderType::REQUEST_HEADER, ":authority")),
                stream.worker_index(),
                text(stream.route_cluster()),
            )
        });
        // Until the decisions of obo_core are wired in, no caller's token goes anywhere.
        stream.remove_request_header("authorization");
        FilterStatus::CONTINUE
    }

    pub fn on_response_headers(&mut self, stream: Stream) -> FilterStatus {
        let from = match self.local_reply {
            true => "a local reply",
            false => "the upstream",
        };
        envoy::debug(|| {
            let status = text(stream.header(HeaderType::RESPONSE_HEADER, ":status"));
            format!("response {status} from {from}")
        });
        FilterStatus::CONTINUE
    }

    /// Envoy is about to answer locally (1.38 offers no `response.code_details` attribute, so
    /// this hook is how the filter tells a local reply from the upstream's response).
    pub fn on_local_reply(&mut self) {
        self.local_reply = true;
    }
}
