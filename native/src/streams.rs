//! What the core does to a stream, kept until it may be done: an action is never taken while the
//! worker's lock is held, because Envoy may call this module's hooks back before
//! `continue_decoding` or `send_response` returns (a local reply runs the encoder filters, and
//! may destroy the filter), and the lock is not re-entrant. (A header change on the running
//! stream calls nothing back, and is made at once: host.rs.) The running stream takes its own
//! actions once the lock is released; another stream's go to its mailbox, and its scheduler has
//! Envoy run them on that stream's own thread (`on_http_filter_scheduled`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::abi::HeaderType;
use crate::envoy::{Stream, StreamScheduler};

/// One thing the core asked of a stream.
pub enum Action {
    SetHeader(String, String),
    RemoveHeader(String),
    Resume,
    Reply {
        status: u32,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
}

/// What a stream's actions came to.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
pub struct Taken {
    pub resumed: bool,
    pub replied: bool,
}

/// Takes a stream's actions in order, on its own thread, in one of its hooks. Where a hook
/// answers "go on" by its return value (request headers), `resume_now` is false and a resume is
/// only reported. After a reply or a resume Envoy may have destroyed the filter: the caller uses
/// nothing of it afterwards, and nothing after those is taken.
///
/// A changed request header does not make Envoy match the route again (Envoy's Wasm host does
/// that after any change): the request keeps the route whose cluster the filter checked.
pub fn take(stream: Stream, actions: impl IntoIterator<Item = Action>, resume_now: bool) -> Taken {
    let mut taken = Taken::default();
    for action in actions {
        match action {
            Action::SetHeader(name, value) => stream.set_request_header(&name, Some(&value)),
            Action::RemoveHeader(name) => stream.set_request_header(&name, None),
            Action::Resume => {
                if resume_now {
                    stream.continue_decoding();
                }
                taken.resumed = true;
                break;
            }
            Action::Reply {
                status,
                headers,
                body,
            } => {
                let mut headers: Vec<(&str, &str)> = headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                // Envoy 1.38 to 1.40 send a module's local reply with gRPC status 0 (OK) to a gRPC
                // caller; Envoy's own choice for the HTTP status is what the Wasm build's reply gets.
                if is_grpc(stream) {
                    headers.push(("grpc-status", grpc_status_of(status)));
                }
                stream.send_reply(status, &headers, &body);
                taken.replied = true;
                return taken;
            }
        }
    }
    taken
}

/// A gRPC request, as Envoy tells one (`Grpc::Common::isGrpcRequestHeaders`).
fn is_grpc(stream: Stream) -> bool {
    stream
        .header(HeaderType::REQUEST_HEADER, "content-type")
        .is_some_and(|t| t.starts_with(b"application/grpc"))
}

/// Envoy's mapping of an HTTP status to a gRPC status (`Grpc::Utility::httpToGrpcStatus`).
fn grpc_status_of(status: u32) -> &'static str {
    match status {
        400 => "13",
        401 => "16",
        403 => "7",
        404 => "12",
        429 | 502 | 503 | 504 => "14",
        _ => "2",
    }
}

/// Whether the request is held after its actions: paused, and neither resumed nor answered.
pub fn holds(verdict_paused: bool, actions: &[Action]) -> bool {
    verdict_paused
        && !actions
            .iter()
            .any(|a| matches!(a, Action::Resume | Action::Reply { .. }))
}

/// The event a stream's scheduler carries: "your mailbox has actions".
pub const MAIL: u64 = 1;

/// A waiting stream's mailbox, reachable from every thread while the stream lives.
pub struct Slot {
    inner: Mutex<SlotInner>,
}

struct SlotInner {
    scheduler: Option<StreamScheduler>,
    mailbox: Vec<Action>,
}

impl Slot {
    /// With the stream's scheduler, made on its thread in one of its hooks.
    pub fn new(scheduler: Option<StreamScheduler>) -> Arc<Slot> {
        Arc::new(Slot {
            inner: Mutex::new(SlotInner {
                scheduler,
                mailbox: Vec::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        // Nothing panics while a slot is held; a poisoned one is still whole.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds to the mailbox and has Envoy run it on the stream's thread; dropped if it is closed.
    fn post(&self, actions: Vec<Action>) {
        let mut inner = self.lock();
        let Some(scheduler) = &inner.scheduler else {
            return;
        };
        // Committed under the lock, so the scheduler cannot be deleted meanwhile; a commit only
        // queues an event, it calls nothing back.
        if inner.mailbox.is_empty() {
            scheduler.commit(MAIL);
        }
        inner.mailbox.extend(actions);
    }

    /// The mailbox's actions, on the stream's thread.
    pub fn take_mail(&self) -> Vec<Action> {
        std::mem::take(&mut self.lock().mailbox)
    }

    /// The stream is going: no more mail, and its scheduler is deleted (on its thread).
    fn close(&self) {
        let mut inner = self.lock();
        inner.mailbox.clear();
        if let Some(scheduler) = inner.scheduler.take() {
            scheduler.delete();
        }
    }
}

/// The streams that wait for an exchange, by the core's context id. Lock order: the worker's
/// lock, then this one.
#[derive(Default)]
pub struct Streams {
    waiting: Mutex<HashMap<u32, Arc<Slot>>>,
}

impl Streams {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<Slot>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn register(&self, context_id: u32, slot: Arc<Slot>) {
        self.lock().insert(context_id, slot);
    }

    pub fn is_registered(&self, context_id: u32) -> bool {
        self.lock().contains_key(&context_id)
    }

    /// From the stream's destroy hook, on its thread.
    pub fn unregister(&self, context_id: u32) {
        let slot = self.lock().remove(&context_id);
        if let Some(slot) = slot {
            slot.close();
        }
    }

    /// Hands each stream its actions (in order); a stream gone meanwhile gets nothing.
    pub fn post(&self, mut actions: Vec<(u32, Action)>) {
        // The usual case (a cache hit's stream ends with nothing for others): no sort, no lock.
        if actions.is_empty() {
            return;
        }
        // A stable sort: each stream's actions stay in the order they were made.
        actions.sort_by_key(|(to, _)| *to);
        let mut actions = actions.into_iter().peekable();
        while let Some((to, first)) = actions.next() {
            let mut mine = vec![first];
            while let Some((_, action)) = actions.next_if(|(next, _)| *next == to) {
                mine.push(action);
            }
            let slot = self.lock().get(&to).cloned();
            if let Some(slot) = slot {
                slot.post(mine);
            }
        }
    }
}
