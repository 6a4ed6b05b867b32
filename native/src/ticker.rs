//! The root's ticks (`Host::set_tick_period_ms`): a thread of the module's own sleeps out the
//! period and commits an event on the configuration's scheduler, and Envoy runs
//! `Worker::on_tick` on its main thread, where the configuration's callouts must be made. While the
//! period is 0 the thread blocks and costs nothing.
//!
//! A new period takes effect at the next tick, unless it is shorter than what is left of the wait
//! for that one: a retry asked for (1 ms) does not wait out an idle tick's second.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::envoy::ConfigScheduler;

/// The event the configuration's scheduler carries for a tick.
pub const TICK: u64 = 1;

#[derive(Default)]
struct Period {
    ms: u64,
    stop: bool,
}

pub struct Ticker {
    period: Mutex<Period>,
    changed: Condvar,
    /// A tick is committed and has not run yet: ticks do not pile up behind a busy main thread.
    queued: AtomicBool,
}

impl Ticker {
    pub fn new() -> Ticker {
        Ticker {
            period: Mutex::default(),
            changed: Condvar::new(),
            queued: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Period> {
        self.period.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// From any thread (the worker's lock may be held: this lock is taken after it).
    pub fn set_period_ms(&self, ms: u64) {
        let mut period = self.lock();
        let sooner = ms > 0 && (period.ms == 0 || ms < period.ms);
        period.ms = ms;
        if sooner {
            self.changed.notify_one();
        }
    }

    /// The tick's event is running: the next one may be committed.
    pub fn ticked(&self) {
        self.queued.store(false, Ordering::Release);
    }

    /// Ends `run`.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_one();
    }

    /// The thread's body, until `stop`.
    pub fn run(&self, scheduler: &ConfigScheduler) {
        let mut period = self.lock();
        loop {
            while !period.stop && period.ms == 0 {
                period = self
                    .changed
                    .wait(period)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            if period.stop {
                return;
            }
            let mut due = Instant::now() + Duration::from_millis(period.ms);
            loop {
                let now = Instant::now();
                if period.stop || now >= due {
                    break;
                }
                period = self
                    .changed
                    .wait_timeout(period, due - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
                if period.ms > 0 {
                    due = due.min(Instant::now() + Duration::from_millis(period.ms));
                }
            }
            if period.stop {
                return;
            }
            if period.ms > 0 && !self.queued.swap(true, Ordering::AcqRel) {
                scheduler.commit(TICK);
            }
        }
    }
}
