//! Which worker exchanges a token several need: a lease in shared data with a deadline, in case
//! its holder died. One lease key per cache slot, so their number is bounded too.

use crate::cache_key::CacheKey;
use crate::host::Host;
use crate::shared_data::version_for_creating;

use crate::shared_data::LEASE_PREFIX as PREFIX;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// This worker holds the lease: it sends the token request.
    Taken,
    /// Another worker holds a live lease for this key: wait for its token.
    HeldElsewhere,
}

pub fn lease_key(key: &CacheKey, slots: u32) -> String {
    format!("{PREFIX}{}", key.slot(slots))
}

fn encode(key: &CacheKey, worker: u64, until_ms: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(48);
    v.extend_from_slice(&key.0);
    v.extend_from_slice(&worker.to_be_bytes());
    v.extend_from_slice(&until_ms.to_be_bytes());
    v
}

/// (key, worker, until_ms) of a stored lease.
fn decode(value: &[u8]) -> Option<([u8; 32], u64, u64)> {
    let (key, rest) = value.split_first_chunk::<32>()?;
    let (worker, rest) = rest.split_first_chunk::<8>()?;
    let (until, _) = rest.split_first_chunk::<8>()?;
    Some((
        *key,
        u64::from_be_bytes(*worker),
        u64::from_be_bytes(*until),
    ))
}

pub fn held_elsewhere(
    host: &dyn Host,
    key: &CacheKey,
    slots: u32,
    worker: u64,
    now_ms: u64,
) -> bool {
    host.shared_get(&lease_key(key, slots))
        .as_deref()
        .and_then(decode)
        .is_some_and(|(k, w, until)| k == key.0 && w != worker && now_ms < until)
}

pub fn try_take(
    host: &dyn Host,
    key: &CacheKey,
    slots: u32,
    worker: u64,
    now_ms: u64,
    until_ms: u64,
) -> Lease {
    let name = lease_key(key, slots);
    let (value, version) = host.shared_get_versioned(&name);
    let live_elsewhere = value
        .as_deref()
        .and_then(decode)
        .is_some_and(|(k, w, until)| k == key.0 && w != worker && now_ms < until);
    if live_elsewhere {
        return Lease::HeldElsewhere;
    }
    let version = match value {
        Some(_) => version,
        None => match version_for_creating(host) {
            Some(version) => version,
            // Without shared data every worker exchanges on its own.
            None => return Lease::Taken,
        },
    };
    if host.shared_set_if(&name, &encode(key, worker, until_ms), version) {
        Lease::Taken
    } else {
        Lease::HeldElsewhere
    }
}

/// Ends `worker`'s lease on `key` (if it still holds it), so waiters stop waiting at once.
pub fn release(host: &dyn Host, key: &CacheKey, slots: u32, worker: u64) {
    let name = lease_key(key, slots);
    let (value, version) = host.shared_get_versioned(&name);
    let ours = value
        .as_deref()
        .and_then(decode)
        .is_some_and(|(k, w, _)| k == key.0 && w == worker);
    if ours {
        host.shared_set_if(&name, &encode(key, worker, 0), version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    #[test]
    fn first_worker_wins_and_the_others_wait() {
        let host = FakeHost::default();
        assert_eq!(try_take(&host, &key(1), 10, 1, 0, 5_000), Lease::Taken);
        assert_eq!(
            try_take(&host, &key(1), 10, 2, 10, 5_010),
            Lease::HeldElsewhere
        );
        assert!(held_elsewhere(&host, &key(1), 10, 2, 10));
        assert!(
            !held_elsewhere(&host, &key(1), 10, 1, 10),
            "not elsewhere for its holder"
        );
    }

    #[test]
    fn expired_lease_can_be_taken_over() {
        let host = FakeHost::default();
        try_take(&host, &key(1), 10, 1, 0, 5_000);
        assert_eq!(try_take(&host, &key(1), 10, 2, 5_000, 10_000), Lease::Taken);
        assert!(held_elsewhere(&host, &key(1), 10, 1, 5_001));
    }

    #[test]
    fn released_lease_is_free() {
        let host = FakeHost::default();
        try_take(&host, &key(1), 10, 1, 0, 5_000);
        release(&host, &key(1), 10, 1);
        assert!(!held_elsewhere(&host, &key(1), 10, 2, 1));
        assert_eq!(try_take(&host, &key(1), 10, 2, 1, 5_001), Lease::Taken);
    }

    #[test]
    fn release_by_another_worker_changes_nothing() {
        let host = FakeHost::default();
        try_take(&host, &key(1), 10, 1, 0, 5_000);
        release(&host, &key(1), 10, 2);
        assert!(held_elsewhere(&host, &key(1), 10, 2, 1));
    }

    #[test]
    fn a_write_between_read_and_swap_loses_the_lease() {
        let host = FakeHost::default();
        let name = lease_key(&key(1), 10);
        host.shared_set(&name, b"");
        let (_, version) = host.shared_get_versioned(&name);
        host.shared_set(&name, &encode(&key(1), 2, 5_000));
        assert!(!host.shared_set_if(&name, &encode(&key(1), 1, 5_000), version));
    }

    #[test]
    fn two_workers_leasing_a_new_slot_at_once_do_not_both_win() {
        // Worker 2 claims the slot between worker 1 finding it absent and worker 1's first
        // write: as two workers missing the same key at the same moment on a fresh Envoy.
        let host = FakeHost::default();
        let worker_2_won = std::rc::Rc::new(std::cell::Cell::new(None));
        let seen = worker_2_won.clone();
        *host.before_next_write.borrow_mut() = Some(Box::new(move |h: &FakeHost| {
            seen.set(Some(try_take(h, &key(1), 10, 2, 0, 5_000)));
        }));
        assert_eq!(
            try_take(&host, &key(1), 10, 1, 0, 5_000),
            Lease::HeldElsewhere
        );
        assert_eq!(worker_2_won.get(), Some(Lease::Taken));
        assert!(held_elsewhere(&host, &key(1), 10, 1, 1));
    }

    #[test]
    fn another_key_in_the_same_slot_does_not_block() {
        let host = FakeHost::default();
        try_take(&host, &key(1), 1, 1, 0, 5_000);
        assert!(!held_elsewhere(&host, &key(2), 1, 2, 1));
    }
}
