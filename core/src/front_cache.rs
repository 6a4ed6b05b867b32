//! Each worker's cache in front of the shared one: a hit costs no SHA-256 and no shared-data read.
//! Entries are found by a randomly keyed SipHash of (target, subject token), which is not kept.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use siphasher::sip128::{Hasher128, SipHasher13};

use crate::cache_key::CacheKey;

/// 16 random bytes from the standard library's per-process random hash keys (WASI's
/// `random_get` in the VM): each `RandomState` hashes nothing to an unpredictable 64-bit value.
fn random_key() -> [u8; 16] {
    let mut key = [0u8; 16];
    for half in key.chunks_mut(8) {
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        half.copy_from_slice(&random.to_le_bytes());
    }
    key
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(u64, u64);

#[derive(Debug, Clone)]
pub struct FrontEntry {
    pub authorization: Arc<str>,
    /// The shared cache's key, to drop the token there too.
    pub key: CacheKey,
    pub until: u64,
    pub refresh_at: u64,
    /// The second it was last served, so a full cache makes room from the entries unused longest.
    last_used: Cell<u64>,
}

pub struct FrontCache {
    capacity: usize,
    hash_key: [u8; 16],
    entries: HashMap<Fingerprint, FrontEntry>,
}

impl FrontCache {
    pub fn new(capacity: usize) -> Self {
        FrontCache {
            capacity,
            hash_key: random_key(),
            entries: HashMap::new(),
        }
    }

    pub fn fingerprint(&self, target: usize, subject_token: &[u8]) -> Fingerprint {
        let mut h = SipHasher13::new_with_key(&self.hash_key);
        h.write_u64(target as u64);
        h.write(subject_token);
        let hash = h.finish128();
        Fingerprint(hash.h1, hash.h2)
    }

    pub fn get(&self, fingerprint: &Fingerprint, now: u64) -> Option<&FrontEntry> {
        let entry = self.entries.get(fingerprint).filter(|e| now < e.until)?;
        entry.last_used.set(now);
        Some(entry)
    }

    pub fn put(
        &mut self,
        fingerprint: Fingerprint,
        key: CacheKey,
        authorization: Arc<str>,
        (use_until, refresh_at): (u64, u64),
        now: u64,
    ) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&fingerprint) {
            // Room for an eighth of the capacity at once: see the design document, front cache.
            self.entries.retain(|_, e| now < e.until);
            let keep = self.capacity - self.capacity.div_ceil(8);
            if self.entries.len() > keep {
                self.drop_least_recently_used(self.entries.len() - keep, now);
            }
        }
        self.entries.insert(
            fingerprint,
            FrontEntry {
                authorization,
                key,
                until: use_until,
                refresh_at,
                last_used: Cell::new(now),
            },
        );
    }

    /// The oldest `n` by age bands (powers of two), without sorting; within one band, any.
    fn drop_least_recently_used(&mut self, n: usize, now: u64) {
        let band = |e: &FrontEntry| 64 - now.saturating_sub(e.last_used.get()).leading_zeros();
        let mut in_band = [0usize; 65];
        for e in self.entries.values() {
            in_band[band(e) as usize] += 1;
        }
        // The band where the oldest `n` end, and how many of them lie in older bands.
        let (mut last, mut older) = (64u32, 0usize);
        while last > 0 && older + in_band[last as usize] < n {
            older += in_band[last as usize];
            last -= 1;
        }
        let mut from_last = n.saturating_sub(older);
        self.entries.retain(|_, e| match band(e).cmp(&last) {
            std::cmp::Ordering::Greater => false,
            std::cmp::Ordering::Equal if from_last > 0 => {
                from_last -= 1;
                false
            }
            _ => true,
        });
    }

    pub fn put_token(
        &mut self,
        fingerprint: Fingerprint,
        key: CacheKey,
        token: &str,
        times: (u64, u64),
        now: u64,
    ) -> Arc<str> {
        let authorization: Arc<str> = format!("Bearer {token}").into();
        self.put(fingerprint, key, authorization.clone(), times, now);
        authorization
    }

    /// Drops every entry (tokens were dropped from the shared cache, which ones is not known).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn forget(&mut self, key: &CacheKey) {
        self.forget_each(std::slice::from_ref(key));
    }

    pub fn forget_each(&mut self, keys: &[CacheKey]) {
        self.entries.retain(|_, e| !keys.contains(&e.key));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey([n; 32])
    }

    /// Keeps an entry for the subject token `subject` (target 0), usable until `until`, at `now`.
    fn put_user(c: &mut FrontCache, subject: &[u8], until: u64, now: u64) -> Fingerprint {
        let fp = c.fingerprint(0, subject);
        c.put(fp, key(1), "Bearer a".into(), (until, until), now);
        fp
    }

    #[test]
    fn entry_is_served_until_its_token_ends() {
        let mut c = FrontCache::new(10);
        let fp = c.fingerprint(0, b"subject");
        c.put(fp, key(1), "Bearer a".into(), (1_000, 900), 100);
        assert_eq!(c.get(&fp, 999).map(|e| &*e.authorization), Some("Bearer a"));
        assert!(c.get(&fp, 1_000).is_none());
    }

    #[test]
    fn fingerprint_separates_targets_and_tokens() {
        let c = FrontCache::new(10);
        assert_eq!(c.fingerprint(0, b"t"), c.fingerprint(0, b"t"));
        assert_ne!(c.fingerprint(0, b"t"), c.fingerprint(1, b"t"));
        assert_ne!(c.fingerprint(0, b"t"), c.fingerprint(0, b"u"));
        let other_worker = FrontCache::new(10);
        assert_ne!(
            c.fingerprint(0, b"t"),
            other_worker.fingerprint(0, b"t"),
            "keyed per worker"
        );
    }

    #[test]
    fn size_stays_within_capacity() {
        let mut c = FrontCache::new(8);
        for i in 0..1_000 {
            let fp = c.fingerprint(0, i.to_string().as_bytes());
            c.put(fp, key(1), "Bearer a".into(), (10_000, 10_000), 100);
            assert!(c.len() <= 8);
            assert_eq!(c.get(&fp, 100).map(|e| &*e.authorization), Some("Bearer a"));
        }
    }

    #[test]
    fn a_full_cache_first_makes_room_from_expired_entries() {
        let mut c = FrontCache::new(8);
        let fps: Vec<Fingerprint> = (0..8u8).map(|i| c.fingerprint(0, &[i])).collect();
        for (i, fp) in fps.iter().enumerate() {
            let until = if i == 3 { 150 } else { 10_000 };
            c.put(*fp, key(1), "Bearer a".into(), (until, until), 100);
        }
        c.put(
            c.fingerprint(0, b"new"),
            key(1),
            "Bearer a".into(),
            (10_000, 10_000),
            200,
        );
        assert_eq!(c.len(), 8, "only the expired entry made room");
        assert!(fps
            .iter()
            .enumerate()
            .all(|(i, fp)| i == 3 || c.get(fp, 200).is_some()));
    }

    #[test]
    fn forget_drops_the_entries_of_a_key() {
        let mut c = FrontCache::new(8);
        let (a, b) = (c.fingerprint(0, b"a"), c.fingerprint(0, b"b"));
        c.put(a, key(1), "Bearer a".into(), (10_000, 10_000), 100);
        c.put(b, key(2), "Bearer b".into(), (10_000, 10_000), 100);
        c.forget(&key(1));
        assert!(c.get(&a, 100).is_none());
        assert!(c.get(&b, 100).is_some());
    }

    #[test]
    fn users_who_came_back_recently_stay_when_a_full_cache_makes_room() {
        // The cache is full of entries nobody has used for an hour; then 32 users come, again
        // and again. Room is made from the unused entries, so after the first round every one of
        // those users is served from the cache.
        let mut c = FrontCache::new(64);
        for i in 0..64u32 {
            let stale = c.fingerprint(1, &i.to_le_bytes());
            c.put(stale, key(1), "Bearer old".into(), (100_000, 100_000), 100);
        }
        let users: Vec<Fingerprint> = (0..32u32)
            .map(|i| c.fingerprint(0, &i.to_le_bytes()))
            .collect();
        let mut misses_in_last_round = 0;
        for round in 0..4 {
            for (i, fp) in users.iter().enumerate() {
                let now = 3_700 + round * 10 + i as u64 / 8;
                if c.get(fp, now).is_none() {
                    c.put(*fp, key(2), "Bearer a".into(), (100_000, 100_000), now);
                    if round == 3 {
                        misses_in_last_round += 1;
                    }
                }
            }
        }
        assert_eq!(misses_in_last_round, 0);
    }

    #[test]
    fn a_full_cache_makes_room_for_an_eighth_of_it_at_once_from_the_least_recently_used() {
        let mut c = FrontCache::new(16);
        // Users 0 and 1 were last served about 1,900 s before 2,000, the others about 500 s.
        let users: Vec<Fingerprint> = (0..16u8)
            .map(|i| put_user(&mut c, &[i], 100_000, if i < 2 { 100 } else { 1_500 }))
            .collect();
        put_user(&mut c, b"new", 100_000, 2_000);
        assert_eq!(c.len(), 15, "two made room for one");
        assert!(c.get(&users[0], 2_000).is_none() && c.get(&users[1], 2_000).is_none());
        assert!(users[2..].iter().all(|fp| c.get(fp, 2_000).is_some()));
        put_user(&mut c, b"next", 100_000, 2_000);
        assert_eq!(c.len(), 16, "the room made before is used first");
    }

    #[test]
    fn a_full_cache_with_one_expired_entry_still_makes_room_for_an_eighth_of_it() {
        // Otherwise, with tokens ending one by one, each new entry would scan the whole cache.
        let mut c = FrontCache::new(16);
        for i in 0..16u8 {
            put_user(&mut c, &[i], if i == 0 { 150 } else { 100_000 }, 100);
        }
        put_user(&mut c, b"new", 100_000, 200);
        assert_eq!(c.len(), 15, "the expired entry and one more made room");
    }

    #[test]
    fn clear_drops_everything() {
        let mut c = FrontCache::new(8);
        let fp = c.fingerprint(0, b"a");
        c.put(fp, key(1), "Bearer a".into(), (10_000, 10_000), 100);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut c = FrontCache::new(0);
        let fp = c.fingerprint(0, b"a");
        c.put(fp, key(1), "Bearer a".into(), (10_000, 10_000), 100);
        assert!(c.is_empty());
    }
}
