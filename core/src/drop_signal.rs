//! How every worker learns which tokens were dropped, so none serves them from its front cache:
//! one shared-data key names the last `RING` drops (the design document has the scheme).

use crate::cache_key::CacheKey;
use crate::host::Host;
use crate::shared_data::version_for_creating;

use crate::shared_data::DROPPED as KEY;
/// More drops between two looks of a worker (a mass revocation) clear its whole front cache.
const RING: usize = 32;
/// Then a plain write makes every worker clear its front cache: never lost, only less precise.
const ATTEMPTS: usize = 8;
const COUNT_BYTES: usize = 8;
const KEY_BYTES: usize = 32;

/// (drops so far, the last keys oldest first); None for a value this version does not write.
fn decode(value: Option<&[u8]>) -> Option<(u64, &[[u8; KEY_BYTES]])> {
    let Some(value) = value else {
        return Some((0, &[]));
    };
    let (count, keys) = value.split_first_chunk::<COUNT_BYTES>()?;
    let (keys, rest) = keys.as_chunks::<KEY_BYTES>();
    (rest.is_empty() && keys.len() <= RING).then_some((u64::from_be_bytes(*count), keys))
}

fn encode(count: u64, keys: &[[u8; KEY_BYTES]]) -> Vec<u8> {
    let mut value = Vec::with_capacity(COUNT_BYTES + keys.len() * KEY_BYTES);
    value.extend_from_slice(&count.to_be_bytes());
    for key in keys {
        value.extend_from_slice(key);
    }
    value
}

/// Tells every worker that `key`'s token was dropped from the shared cache. Call it after the
/// drop, so that a worker that forgets the key cannot read the dropped token back.
pub fn announce(host: &dyn Host, key: &CacheKey) {
    for _ in 0..ATTEMPTS {
        let (value, version) = host.shared_get_versioned(KEY);
        // A value this version cannot read is replaced: its watchers let go of everything anyway.
        let (count, last) = decode(value.as_deref()).unwrap_or((0, &[]));
        let mut keys = last[last.len().saturating_sub(RING - 1)..].to_vec();
        keys.push(key.0);
        let new_value = encode(count.wrapping_add(1), &keys);
        let version = match value {
            Some(_) => Some(version),
            None => version_for_creating(host),
        };
        match version {
            Some(version) if host.shared_set_if(KEY, &new_value, version) => return,
            Some(_) => continue,
            // Without shared data there is no other worker to tell.
            None => return,
        }
    }
    // Lost every race: a count that no watcher can account for tells each to clear everything.
    let (value, _) = host.shared_get_versioned(KEY);
    let count = decode(value.as_deref()).map_or(0, |(c, _)| c);
    host.shared_set(KEY, &encode(count.wrapping_add(RING as u64 + 1), &[]));
}

#[derive(Debug, PartialEq, Eq)]
pub enum Dropped {
    Nothing,
    Keys(Vec<CacheKey>),
    /// Some tokens were dropped, and which ones is not known: let go of every entry.
    Unknown,
}

/// One worker's view of the announcements.
#[derive(Debug, Default)]
pub struct DropWatch {
    looked_at_s: u64,
    /// The key's version then (absent: 0); None before the first look.
    seen: Option<u32>,
    /// The count of drops then, if the value was one this version of the filter writes.
    seen_count: Option<u64>,
}

impl DropWatch {
    /// At most one look a second; the first says `Unknown`, knowing nothing of what came before.
    pub fn look(&mut self, host: &dyn Host, now: u64) -> Dropped {
        if now == self.looked_at_s {
            return Dropped::Nothing;
        }
        self.looked_at_s = now;
        let (value, version) = host.shared_get_versioned(KEY);
        if self.seen == Some(version) {
            return Dropped::Nothing;
        }
        let first_look = self.seen.is_none();
        self.seen = Some(version);
        let decoded = decode(value.as_deref());
        let since = std::mem::replace(&mut self.seen_count, decoded.map(|(count, _)| count));
        let (Some((count, keys)), Some(since), false) = (decoded, since, first_look) else {
            return Dropped::Unknown;
        };
        // A changed version always means a drop, so no new count is as unaccountable as too many.
        match usize::try_from(count.wrapping_sub(since)) {
            Ok(new) if new > 0 && new <= keys.len() => Dropped::Keys(
                keys[keys.len() - new..]
                    .iter()
                    .map(|k| CacheKey(*k))
                    .collect(),
            ),
            _ => Dropped::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::rc::Rc;

    use super::*;
    use crate::testing::FakeHost;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    /// A watcher that has looked once, at the fake clock's second.
    fn watching(host: &FakeHost) -> (DropWatch, u64) {
        let now = host.now.get();
        let mut watch = DropWatch::default();
        assert_eq!(watch.look(host, now), Dropped::Unknown, "first look");
        (watch, now)
    }

    #[test]
    fn an_announcement_is_seen_once_at_the_next_second() {
        let host = FakeHost::default();
        let (mut watch, now) = watching(&host);
        assert_eq!(watch.look(&host, now + 1), Dropped::Nothing);
        announce(&host, &key(1));
        assert_eq!(
            watch.look(&host, now + 1),
            Dropped::Nothing,
            "looked this second already"
        );
        assert_eq!(watch.look(&host, now + 2), Dropped::Keys(vec![key(1)]));
        assert_eq!(watch.look(&host, now + 3), Dropped::Nothing, "seen once");
    }

    #[test]
    fn a_look_names_every_key_dropped_since_the_last_one() {
        let host = FakeHost::default();
        announce(&host, &key(1));
        let (mut watch, now) = watching(&host);
        announce(&host, &key(2));
        announce(&host, &key(3));
        assert_eq!(
            watch.look(&host, now + 1),
            Dropped::Keys(vec![key(2), key(3)]),
            "not key 1, dropped before the first look"
        );
    }

    #[test]
    fn more_drops_between_two_looks_than_the_ring_holds_let_go_of_everything() {
        let host = FakeHost::default();
        let (mut watch, now) = watching(&host);
        for n in 0..RING as u8 {
            announce(&host, &key(n));
        }
        let Dropped::Keys(keys) = watch.look(&host, now + 1) else {
            panic!("a full ring names its keys");
        };
        assert_eq!(keys.len(), RING);
        for n in 0..=RING as u8 {
            announce(&host, &key(n));
        }
        assert_eq!(watch.look(&host, now + 2), Dropped::Unknown);
    }

    #[test]
    fn a_value_written_by_another_version_of_the_filter_lets_go_of_everything() {
        let host = FakeHost::default();
        announce(&host, &key(1));
        let (mut watch, now) = watching(&host);
        // The filter before the ring wrote an empty value.
        host.shared_set(KEY, b"");
        assert_eq!(watch.look(&host, now + 1), Dropped::Unknown);
        // The next announcement counts from zero again, and cannot be accounted for either.
        announce(&host, &key(2));
        assert_eq!(watch.look(&host, now + 2), Dropped::Unknown);
        announce(&host, &key(3));
        assert_eq!(watch.look(&host, now + 3), Dropped::Keys(vec![key(3)]));
    }

    #[test]
    fn a_value_of_any_other_shape_lets_go_of_everything() {
        let too_many = encode(RING as u64 + 1, &vec![[7; KEY_BYTES]; RING + 1]);
        for value in [&[1u8; 7][..], &[1; 8 + 31], &[1; 8 + 33], &too_many] {
            let host = FakeHost::default();
            let (mut watch, now) = watching(&host);
            host.shared_set(KEY, value);
            assert_eq!(
                watch.look(&host, now + 1),
                Dropped::Unknown,
                "{} bytes",
                value.len()
            );
        }
    }

    #[test]
    fn two_workers_announcing_at_once_both_get_their_key_through() {
        for already_announced in [false, true] {
            let host = FakeHost::default();
            if already_announced {
                announce(&host, &key(9));
            }
            let (mut watch, now) = watching(&host);
            // Worker 2 announces between worker 1's read and its write (on a fresh Envoy: both
            // creating the key).
            *host.before_next_write.borrow_mut() =
                Some(Box::new(|h: &FakeHost| announce(h, &key(2))));
            announce(&host, &key(1));
            assert_eq!(
                watch.look(&host, now + 1),
                Dropped::Keys(vec![key(2), key(1)]),
                "key already there: {already_announced}"
            );
        }
    }

    #[test]
    fn an_announcement_that_keeps_losing_the_race_lets_go_of_everything() {
        let host = FakeHost::default();
        let (mut watch, now) = watching(&host);
        let races = Rc::new(Cell::new(0u8));
        // Before each of its writes, another worker announces a key of its own.
        fn race(h: &FakeHost, races: Rc<Cell<u8>>) {
            races.set(races.get() + 1);
            announce(h, &key(100 + races.get()));
            let again = races.clone();
            *h.before_next_write.borrow_mut() = Some(Box::new(move |h| race(h, again)));
        }
        let first = races.clone();
        *host.before_next_write.borrow_mut() = Some(Box::new(move |h| race(h, first)));
        announce(&host, &key(1));
        host.before_next_write.borrow_mut().take();
        assert!(
            usize::from(races.get()) > ATTEMPTS,
            "lost {} races",
            races.get()
        );
        assert_eq!(watch.look(&host, now + 1), Dropped::Unknown);
    }
}
