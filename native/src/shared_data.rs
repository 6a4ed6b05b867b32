//! The core's shared data (`Host::shared_*`) in the module's own memory: one map for the whole
//! process, as Envoy's proxy-wasm shared data is one map for every VM with the same `vm_id`. So
//! two filter configurations in one Envoy (two listeners, or the old and new one of an update)
//! share tokens and leases as two Wasm filters do.
//!
//! Versions follow Envoy's: one counter numbers every write, so a key's version is never one
//! another key's write took (docs/design.md, "Create if absent", depends on it). Lock order: the
//! worker's lock, then this one; nothing is called while it is held.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};

#[derive(Default)]
struct Map {
    values: HashMap<String, (Vec<u8>, u32)>,
    /// The version the next write takes (0 is never one: it means "absent").
    next: u32,
}

impl Map {
    fn next_version(&mut self) -> u32 {
        self.next = self.next.wrapping_add(1).max(1);
        self.next
    }
}

static SHARED: LazyLock<Mutex<Map>> = LazyLock::new(Mutex::default);

fn with<R>(f: impl FnOnce(&mut Map) -> R) -> R {
    // A panic never happens while the map is held (nothing in here panics), and if it did the
    // map would still be whole: every change is one insert.
    f(&mut SHARED.lock().unwrap_or_else(PoisonError::into_inner))
}

/// The value and its version; absent: None and 0.
pub fn get(key: &str) -> (Option<Vec<u8>>, u32) {
    with(|map| match map.values.get(key) {
        Some((value, version)) => (Some(value.clone()), *version),
        None => (None, 0),
    })
}

/// Writes `value` if `version` is 0, or the key is absent, or still at `version` (Envoy's rule).
pub fn set(key: &str, value: &[u8], version: u32) -> bool {
    with(|map| {
        if let Some((_, current)) = map.values.get(key) {
            if version != 0 && version != *current {
                return false;
            }
        }
        let next = map.next_version();
        map.values.insert(key.to_string(), (value.to_vec(), next));
        true
    })
}
