//! One filter configuration's state, shared by every worker thread: one `Worker` behind a lock (so
//! the token cache, the exchanges in flight and the one-token-request-per-key rule are the
//! process's, not a thread's), the streams waiting for an exchange, the root's ticks, the
//! configuration's callouts and the metrics.
//!
//! Lifetime: made in `on_http_filter_config_new` and freed in `on_http_filter_config_destroy`.
//! Envoy keeps a configuration alive while any filter made from it lives, and the ticker thread is
//! joined before it is freed, so a `&'static ConfigState` never outlives it in fact.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use obo_core::exchange::{CallAnswer, Worker};
use obo_core::filter::WorkerHandle;

use crate::abi::LogLevel;
use crate::envoy::{self, ConfigEnvoy, ConfigScheduler};
use crate::host::NativeHost;
use crate::metrics::Metrics;
use crate::streams::Streams;
use crate::ticker::Ticker;

/// The root context's id, in the core's numbering of contexts (streams take ids from 2 on).
pub const ROOT_ID: u32 = 1;

pub struct ConfigState {
    worker: Mutex<Worker>,
    pub envoy: ConfigEnvoy,
    pub streams: Streams,
    pub ticker: Ticker,
    pub metrics: Metrics,
    scheduler: Option<ConfigScheduler>,
    ticker_thread: Mutex<Option<JoinHandle<()>>>,
    /// The configuration's callouts in flight: Envoy's id to the core's token id (main thread).
    root_calls: Mutex<HashMap<u64, u32>>,
    /// Answers the module made itself (`token_file`), for the root's tick to hand the worker.
    own_answers: Mutex<Vec<(u32, CallAnswer)>>,
    next_context_id: AtomicU32,
    /// The longest the root goes without a tick (0: as long as nothing asks for one).
    idle_tick_ms: u64,
}

/// The core's token ids, one counter for the process: Envoy numbers callouts per stream and per
/// configuration, but the core needs one id per token request.
static NEXT_TOKEN_ID: AtomicU32 = AtomicU32::new(1);

pub fn next_token_id() -> u32 {
    NEXT_TOKEN_ID.fetch_add(1, Ordering::Relaxed)
}

impl ConfigState {
    /// On the main thread, in `on_http_filter_config_new`.
    pub fn new(envoy: ConfigEnvoy, worker: Worker, idle_tick_ms: u64) -> ConfigState {
        let ticker = Ticker::new();
        ticker.set_period_ms(idle_tick_ms);
        ConfigState {
            worker: Mutex::new(worker),
            envoy,
            streams: Streams::default(),
            ticker,
            metrics: Metrics::define(envoy),
            scheduler: envoy.scheduler(),
            ticker_thread: Mutex::new(None),
            root_calls: Mutex::default(),
            own_answers: Mutex::default(),
            next_context_id: AtomicU32::new(ROOT_ID + 1),
            idle_tick_ms,
        }
    }

    /// Starts the ticker thread, once the state has its final ('static) place.
    pub fn start_ticker(&'static self) {
        let Some(scheduler) = &self.scheduler else {
            envoy::log(
                LogLevel::ERROR,
                "no scheduler for the filter configuration: retries and refreshes are not sent",
            );
            return;
        };
        let thread = std::thread::Builder::new()
            .name("entra-obo-tick".into())
            .spawn(move || self.ticker.run(scheduler));
        match thread {
            Ok(handle) => *lock(&self.ticker_thread) = Some(handle),
            Err(e) => envoy::log(
                LogLevel::ERROR,
                &format!("cannot start the filter's tick thread: {e}"),
            ),
        }
    }

    /// In `on_http_filter_config_destroy`: the ticker thread ends before the scheduler goes.
    pub fn shut_down(&mut self) {
        self.ticker.stop();
        if let Some(thread) = lock(&self.ticker_thread).take() {
            let _ = thread.join();
        }
        if let Some(scheduler) = self.scheduler.take() {
            scheduler.delete();
        }
    }

    pub fn new_context_id(&self) -> u32 {
        // Wrapping past u32::MAX skips the root's id and 0.
        loop {
            let id = self.next_context_id.fetch_add(1, Ordering::Relaxed);
            if id > ROOT_ID {
                return id;
            }
        }
    }

    pub fn worker(&self) -> MutexGuard<'_, Worker> {
        // A panic in the core while it held the worker (a bug, caught by the hook's guard) leaves
        // the worker usable: every change it makes to itself is memory-safe, and a request it
        // left half-settled is answered by Envoy's own timeouts.
        lock(&self.worker)
    }

    pub fn remember_root_call(&self, callout_id: u64, token_id: u32) {
        lock(&self.root_calls).insert(callout_id, token_id);
    }

    /// An answer the root gets at the end of this tick (the worker's lock is held).
    pub fn answer_on_tick(&self, token_id: u32, answer: CallAnswer) {
        lock(&self.own_answers).push((token_id, answer));
        self.ticker.set_period_ms(1);
    }

    /// The root's tick, on the main thread (`on_http_filter_config_scheduled`).
    pub fn on_tick(&self) {
        self.ticker.ticked();
        let host = NativeHost::root(self);
        {
            let mut worker = self.worker();
            let mut next_ms = worker.on_tick(&host, ROOT_ID);
            loop {
                let answers = std::mem::take(&mut *lock(&self.own_answers));
                if answers.is_empty() {
                    break;
                }
                for (token_id, answer) in answers {
                    worker.complete(&host, token_id, &answer, ROOT_ID);
                }
                // What the answers let go is sent at the next tick, which sets its own period.
                next_ms = 1;
            }
            let next_ms = match (next_ms, self.idle_tick_ms) {
                (0, idle) => idle,
                (next, 0) => next,
                (next, idle) => next.min(idle),
            };
            // Inside the lock: a stream asking for a tick meanwhile is not overwritten.
            self.ticker.set_period_ms(next_ms);
        }
        self.streams.post(host.take_actions_for_others());
    }

    /// An answer to the configuration's callout, on the main thread.
    pub fn on_root_answer(&self, callout_id: u64, answer: &CallAnswer) {
        let Some(token_id) = lock(&self.root_calls).remove(&callout_id) else {
            return;
        };
        let host = NativeHost::root(self);
        self.worker().complete(&host, token_id, answer, ROOT_ID);
        self.streams.post(host.take_actions_for_others());
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How a stream's `RequestFilter` reaches the configuration's one worker.
#[derive(Clone, Copy)]
pub struct Shared(pub &'static ConfigState);

impl WorkerHandle for Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Worker) -> R) -> R {
        f(&mut self.0.worker())
    }
}
