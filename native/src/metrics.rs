//! The filter's counters and latency histogram, with the Wasm build's names: defined once on the
//! configuration, counted through the running stream's filter. Envoy 1.38 counts only through a
//! stream, so what the main thread counts (the root's retries, refreshes, and the token requests
//! of streams that left) is kept here and handed over by the next stream's hook.
//!
//! Each tenant's failed exchanges count in one labelled counter, `obo_tenant_exchange_failures`
//! with the label `tenant`: the tid, or `other` (`obo_core::metrics::TenantCounters` decides).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use obo_core::metrics::{Counter, TenantCounters, EXCHANGE_LATENCY_MS, TENANT_EXCHANGE_FAILURES};

use crate::envoy::{ConfigEnvoy, Stream};

/// Envoy's ids of the metrics; None where Envoy refused to define one.
pub struct Metrics {
    counters: [Option<usize>; Counter::ALL.len()],
    latency: Option<usize>,
    tenant_failures: Option<usize>,
    /// The label value of each tenant counted so far, by `TenantCounters`' index.
    tenants: Mutex<Tenants>,
    pending: Pending,
}

#[derive(Default)]
struct Tenants {
    counters: TenantCounters<usize>,
    labels: Vec<String>,
}

/// Counts made with no stream to count through.
#[derive(Default)]
struct Pending {
    any: AtomicBool,
    counts: [AtomicU64; Counter::ALL.len()],
    /// Latencies and tenant label indices.
    recorded: Mutex<(Vec<u64>, Vec<usize>)>,
}

impl Metrics {
    /// In `on_http_filter_config_new`.
    pub fn define(config: ConfigEnvoy) -> Metrics {
        Metrics {
            counters: Counter::ALL.map(|c| config.define_counter(c.name(), &[])),
            latency: config.define_histogram(EXCHANGE_LATENCY_MS),
            tenant_failures: config.define_counter(TENANT_EXCHANGE_FAILURES, &["tenant"]),
            tenants: Mutex::default(),
            pending: Pending::default(),
        }
    }

    pub fn count(&self, stream: Option<Stream>, counter: Counter) {
        let Some(id) = self.counters[counter.index()] else {
            return;
        };
        match stream {
            Some(stream) => stream.increment_counter(id, None, 1),
            None => {
                self.pending.counts[counter.index()].fetch_add(1, Ordering::Relaxed);
                self.pending.any.store(true, Ordering::Release);
            }
        }
    }

    pub fn record_latency(&self, stream: Option<Stream>, ms: u64) {
        let Some(id) = self.latency else {
            return;
        };
        match stream {
            Some(stream) => stream.record_histogram(id, ms),
            None => {
                self.recorded().0.push(ms);
                self.pending.any.store(true, Ordering::Release);
            }
        }
    }

    pub fn count_tenant_failure(&self, stream: Option<Stream>, tenant: &str) {
        let Some(id) = self.tenant_failures else {
            return;
        };
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let Tenants { counters, labels } = &mut *tenants;
        // The core names the stat `<name>.<tid>`; here the tid is the label's value.
        let index = counters.counter(tenant, |name| {
            let label = name.rsplit('.').next().unwrap_or("other");
            labels.push(label.to_string());
            Some(labels.len() - 1)
        });
        let Some(index) = index else {
            return;
        };
        match stream {
            Some(stream) => {
                if let Some(label) = labels.get(index) {
                    stream.increment_counter(id, Some(label), 1);
                }
            }
            None => {
                drop(tenants);
                self.recorded().1.push(index);
                self.pending.any.store(true, Ordering::Release);
            }
        }
    }

    fn recorded(&self) -> std::sync::MutexGuard<'_, (Vec<u64>, Vec<usize>)> {
        self.pending
            .recorded
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands what the main thread counted to Envoy through `stream` (one load when nothing is).
    pub fn hand_over(&self, stream: Stream) {
        // A load first: the hot path only reads the flag, so the line stays shared by the threads.
        if !self.pending.any.load(Ordering::Acquire)
            || !self.pending.any.swap(false, Ordering::AcqRel)
        {
            return;
        }
        for (counter, pending) in Counter::ALL.iter().zip(&self.pending.counts) {
            let n = pending.swap(0, Ordering::Relaxed);
            if let (Some(id), true) = (self.counters[counter.index()], n > 0) {
                stream.increment_counter(id, None, n);
            }
        }
        let (latencies, tenants) = std::mem::take(&mut *self.recorded());
        if let Some(id) = self.latency {
            for ms in latencies {
                stream.record_histogram(id, ms);
            }
        }
        if let Some(id) = self.tenant_failures {
            let names = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
            for index in tenants {
                if let Some(label) = names.labels.get(index) {
                    stream.increment_counter(id, Some(label), 1);
                }
            }
        }
    }
}
