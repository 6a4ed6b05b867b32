//! An upstream's claims challenge: how it is recognised, and when it drops the cached token.

use std::collections::HashMap;

use crate::cache_key::CacheKey;
use crate::host::Host;

/// The most keys a worker remembers drops for. Beyond it (more challenged users within one
/// holdoff than this), a challenge drops the token as if there were no holdoff.
const MAX_REMEMBERED: usize = 4_096;

pub fn from_upstream(host: &dyn Host) -> bool {
    // `www-authenticate` first: on the usual answer it is absent, and Envoy reports an absent
    // header without allocating in the VM, where reading `:status` would allocate each time.
    let Some(challenge) = host.response_header("www-authenticate") else {
        return false;
    };
    // Last, as it is dearest; the filter's own `interaction_required` refusal looks the same.
    challenge.contains("insufficient_claims")
        && is_unauthenticated(host)
        && host.response_from_upstream()
}

/// A 401, or gRPC's `UNAUTHENTICATED`, which comes in a 200.
fn is_unauthenticated(host: &dyn Host) -> bool {
    match host.response_header(":status").as_deref() {
        Some("401") => true,
        Some("200") => host.response_header("grpc-status").as_deref() == Some("16"),
        _ => false,
    }
}

/// When this worker last dropped each key's token for a challenge.
#[derive(Default)]
pub struct RecentDrops {
    dropped_at: HashMap<CacheKey, u64>,
}

impl RecentDrops {
    /// If a challenge at `now` drops `key`'s token, it counts as this worker's last drop for it.
    pub fn may_drop(&mut self, key: CacheKey, now: u64, holdoff_s: u64) -> bool {
        if holdoff_s == 0 {
            return true;
        }
        let held_until = |dropped_at: u64| dropped_at.saturating_add(holdoff_s);
        if self
            .dropped_at
            .get(&key)
            .is_some_and(|&at| now < held_until(at))
        {
            return false;
        }
        if self.dropped_at.len() >= MAX_REMEMBERED {
            self.dropped_at.retain(|_, at| now < held_until(*at));
        }
        if self.dropped_at.len() < MAX_REMEMBERED {
            self.dropped_at.insert(key, now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u16) -> CacheKey {
        let mut k = [0u8; 32];
        k[..2].copy_from_slice(&n.to_be_bytes());
        CacheKey(k)
    }

    #[test]
    fn a_key_is_dropped_once_per_holdoff() {
        let mut h = RecentDrops::default();
        assert!(h.may_drop(key(1), 1_000, 60));
        assert!(!h.may_drop(key(1), 1_001, 60));
        assert!(!h.may_drop(key(1), 1_059, 60));
        assert!(h.may_drop(key(1), 1_060, 60), "the holdoff is over");
        assert!(!h.may_drop(key(1), 1_061, 60), "and starts again");
    }

    #[test]
    fn other_keys_are_not_held_off() {
        let mut h = RecentDrops::default();
        assert!(h.may_drop(key(1), 1_000, 60));
        assert!(h.may_drop(key(2), 1_000, 60));
    }

    #[test]
    fn without_a_holdoff_every_challenge_drops() {
        let mut h = RecentDrops::default();
        for now in [1_000, 1_000, 1_001] {
            assert!(h.may_drop(key(1), now, 0));
        }
    }

    #[test]
    fn memory_stays_bounded_and_ended_holdoffs_make_room() {
        let mut h = RecentDrops::default();
        for n in 0..MAX_REMEMBERED as u16 {
            assert!(h.may_drop(key(n), 1_000, 60));
        }
        // Full, every holdoff still running: a new key is dropped, and not remembered.
        let new = key(u16::MAX);
        assert!(h.may_drop(new, 1_010, 60));
        assert!(h.may_drop(new, 1_011, 60));
        assert_eq!(h.dropped_at.len(), MAX_REMEMBERED);
        assert!(
            !h.may_drop(key(0), 1_011, 60),
            "the remembered keys stay held off"
        );
        // Once those holdoffs end, the new key is remembered again.
        assert!(h.may_drop(new, 1_060, 60));
        assert!(!h.may_drop(new, 1_061, 60));
        assert_eq!(h.dropped_at.len(), 1);
    }
}
