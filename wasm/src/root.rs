//! The root context, one per worker: validates the configuration; sends retries, refreshes and
//! the token requests of requests that went away.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType};

use crate::host_calls::{
    define_metrics, flush_metrics, read_call_answer, ProxyHost, METRICS_FLUSH_MS,
};
use crate::http::RequestContext;
use obo_core::config;
use obo_core::exchange::Worker;
use obo_core::filter::RequestFilter;
use obo_core::host::{Host, LogLevel};

pub fn new_root_context(context_id: u32) -> Box<dyn RootContext> {
    Box::new(Root {
        context_id,
        worker: Rc::new(RefCell::new(Worker::default())),
    })
}

struct Root {
    context_id: u32,
    worker: Rc<RefCell<Worker>>,
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        num_headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        let answer = read_call_answer(num_headers, body_size);
        self.worker
            .borrow_mut()
            .complete(&ProxyHost, token_id, &answer, self.context_id);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        define_metrics();
        let bytes = hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        )
        .ok()
        .flatten()
        .unwrap_or_default();
        match config::parse(&bytes, &|name| std::env::var(name).ok()) {
            Ok(config) => {
                ProxyHost.log(LogLevel::Info, &config::summary(&config));
                self.worker.borrow_mut().configure(config);
                ProxyHost.set_tick_period_ms(METRICS_FLUSH_MS);
                true
            }
            Err(errors) => {
                for e in errors.iter() {
                    ProxyHost.log(LogLevel::Error, &e.to_string());
                }
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let next_ms = self
            .worker
            .borrow_mut()
            .on_tick(&ProxyHost, self.context_id);
        flush_metrics();
        // The worker's own ticks when it has token requests to send; the metrics' otherwise.
        ProxyHost.set_tick_period_ms(if next_ms == 0 {
            METRICS_FLUSH_MS
        } else {
            next_ms.min(METRICS_FLUSH_MS)
        });
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(RequestContext::new(RequestFilter::new(
            context_id,
            self.worker.clone(),
        ))))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
