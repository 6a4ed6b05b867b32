//! How every worker learns that a token was dropped from the shared cache (continuous access
//! evaluation), so that none goes on serving it from its front cache.
//!
//! The worker that drops a token writes one shared-data key. Envoy gives every write a new version,
//! so the key's version alone says "something was dropped since you last looked". Each worker looks
//! at most once a second, before it serves a request, and clears its whole front cache when the
//! version changed: drops are rare, and each cleared entry costs one shared-data read to restore.
//! A look is one small shared-data read a second, so the front cache can keep an entry for as long
//! as its token is valid, and a drop still reaches every worker within about a second.

use crate::host::Host;

const KEY: &str = "entra-obo-filter/v1/dropped";

/// Tells every worker that a token was dropped from the shared cache. Call it after the drop, so
/// that a worker that clears its front cache cannot read the dropped token back.
pub fn announce(host: &dyn Host) {
    host.shared_set(KEY, b"");
}

/// One worker's view of the announcements.
#[derive(Debug, Default)]
pub struct DropWatch {
    /// The second of the last look.
    looked_at_s: u64,
    /// The key's version then (absent: 0); None before the first look.
    seen: Option<u32>,
}

impl DropWatch {
    /// Whether a token was dropped since the last look, looking at most once per second. The first
    /// look says yes: this worker knows nothing of what came before.
    pub fn dropped_since_last_look(&mut self, host: &dyn Host, now: u64) -> bool {
        if now == self.looked_at_s {
            return false;
        }
        self.looked_at_s = now;
        let (_, version) = host.shared_get_versioned(KEY);
        let changed = self.seen != Some(version);
        self.seen = Some(version);
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_host::FakeHost;

    #[test]
    fn an_announcement_is_seen_once_at_the_next_second() {
        let host = FakeHost::default();
        let now = host.now.get();
        let mut watch = DropWatch::default();
        assert!(watch.dropped_since_last_look(&host, now), "first look");
        assert!(!watch.dropped_since_last_look(&host, now + 1));
        announce(&host);
        assert!(
            !watch.dropped_since_last_look(&host, now + 1),
            "looked this second already"
        );
        assert!(watch.dropped_since_last_look(&host, now + 2));
        assert!(!watch.dropped_since_last_look(&host, now + 3), "seen once");
    }

    #[test]
    fn every_announcement_counts_even_when_two_come_between_looks() {
        let host = FakeHost::default();
        let now = host.now.get();
        let mut watch = DropWatch::default();
        watch.dropped_since_last_look(&host, now);
        announce(&host);
        assert!(watch.dropped_since_last_look(&host, now + 1));
        announce(&host);
        announce(&host);
        assert!(watch.dropped_since_last_look(&host, now + 2));
    }
}
