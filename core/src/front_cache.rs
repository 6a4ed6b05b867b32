//! Each worker's cache in front of the shared one: a hit costs no SHA-256 and no shared-data read.
//! An entry keeps the subject token it was exchanged for and is served only to that token and
//! target, compared byte for byte: that comparison, not the hash, is what keeps one caller's token
//! from another. The hash (foldhash, seeded at random per worker) only finds the entry.
//!
//! An entry is found by a quick hash of a sample of the token: its length, its middle and its
//! last 32 bytes, which in a signed or encrypted token are its signature or tag, unlike any other
//! token's. Over a 1.6 KB token the sample costs a tenth of hashing every byte. Tokens whose
//! samples meet (tokens made alike, as in tests) do not take one slot in turn: the second of
//! them is kept at the hash of all its bytes, which a request looks for only when its quick slot
//! holds no entry of its own.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use foldhash::quality::SeedableRandomState;
use foldhash::SharedSeed;

use crate::cache_key::CacheKey;

/// A random seed from the standard library's per-process random hash keys (WASI's `random_get` in
/// the VM): each `RandomState` hashes nothing to an unpredictable 64-bit value.
fn random_seed() -> u64 {
    std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish()
}

/// `a == b`. In the VM a slice comparison is a byte-by-byte loop (WASI's `memcmp`), which over a
/// 1.6 KB token costs more than the hash; eight bytes at a time it costs a sixth of that.
#[cfg(target_family = "wasm")]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    same_words(a, b)
}

#[cfg(any(target_family = "wasm", test))]
fn same_words(a: &[u8], b: &[u8]) -> bool {
    let ((a_words, a_rest), (b_words, b_rest)) = (a.as_chunks::<8>(), b.as_chunks::<8>());
    a.len() == b.len()
        && a_words
            .iter()
            .zip(b_words)
            .all(|(x, y)| u64::from_ne_bytes(*x) == u64::from_ne_bytes(*y))
        && a_rest == b_rest
}

/// `a == b`: natively, the C library's `memcmp`, the fastest there is.
#[cfg(not(target_family = "wasm"))]
fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a == b
}

/// Where a request's entry would be: the quick hash of (target, subject token), and the target.
/// Equal fingerprints do not make equal requests: `FrontCache::get` compares the token itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint {
    hash: u64,
    target: usize,
    /// The seed of the cache that made it: another cache (a worker's after its configuration was
    /// loaded again, where target indexes may differ) takes no entry by it.
    seed: u64,
}

#[derive(Debug, Clone)]
pub struct FrontEntry {
    pub authorization: Arc<str>,
    /// The shared cache's key, to drop the token there too.
    pub key: CacheKey,
    pub until: u64,
    pub refresh_at: u64,
    /// The second it was last served, so a full cache makes room from the entries unused longest.
    last_used: Cell<u64>,
    target: usize,
    /// The subject token the entry's token was exchanged for: the only one it is served to.
    subject: Box<[u8]>,
}

pub struct FrontCache {
    capacity: usize,
    seed: u64,
    hasher: SeedableRandomState,
    /// By fingerprint hash; two requests whose hashes meet share a slot, each taking it in turn.
    entries: HashMap<u64, FrontEntry, foldhash::fast::FixedState>,
}

impl FrontCache {
    pub fn new(capacity: usize) -> Self {
        let seed = random_seed();
        FrontCache {
            capacity,
            seed,
            hasher: SeedableRandomState::with_seed(seed, SharedSeed::global_fixed()),
            entries: HashMap::default(),
        }
    }

    pub fn fingerprint(&self, target: usize, subject_token: &[u8]) -> Fingerprint {
        Fingerprint {
            hash: self.quick_hash(target, subject_token),
            target,
            seed: self.seed,
        }
    }

    /// The hash of the token's length, its middle and its last `SAMPLE` bytes (all of a short one).
    fn quick_hash(&self, target: usize, subject_token: &[u8]) -> u64 {
        const SAMPLE: usize = 32;
        let mut h = self.hasher.build_hasher();
        h.write_u8(0);
        h.write_usize(target);
        let len = subject_token.len();
        match len <= 2 * SAMPLE {
            true => h.write(subject_token),
            false => {
                let middle = len / 2 - SAMPLE / 2;
                h.write_usize(len);
                h.write(&subject_token[middle..middle + SAMPLE]);
                h.write(&subject_token[len - SAMPLE..]);
            }
        }
        h.finish()
    }

    /// Where an entry whose quick slot was another token's is kept: the hash of every byte.
    fn full_hash(&self, target: usize, subject_token: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u8(1);
        h.write_usize(target);
        h.write(subject_token);
        h.finish()
    }

    /// The entry at `hash`, if it is `subject_token`'s for `target`.
    fn own_entry(&self, hash: u64, target: usize, subject_token: &[u8]) -> Option<&FrontEntry> {
        self.entries
            .get(&hash)
            .filter(|e| e.target == target && same_bytes(&e.subject, subject_token))
    }

    /// The entry of `subject_token` (whose fingerprint this is), while its token lasts. An entry
    /// whose hash a token meets is served only if the target and the token compare equal, and
    /// none by another cache's fingerprint, whose target index may name another target.
    pub fn get(
        &self,
        fingerprint: &Fingerprint,
        subject_token: &[u8],
        now: u64,
    ) -> Option<&FrontEntry> {
        if fingerprint.seed != self.seed {
            return None;
        }
        let target = fingerprint.target;
        let entry = match self.own_entry(fingerprint.hash, target, subject_token) {
            Some(entry) => entry,
            // Not at its quick slot: at its full one, if the quick one was another token's.
            None => self.own_entry(self.full_hash(target, subject_token), target, subject_token)?,
        };
        if now >= entry.until {
            return None;
        }
        entry.last_used.set(now);
        Some(entry)
    }

    pub fn put(
        &mut self,
        fingerprint: Fingerprint,
        subject_token: &[u8],
        key: CacheKey,
        authorization: Arc<str>,
        (use_until, refresh_at): (u64, u64),
        now: u64,
    ) {
        if self.capacity == 0 || fingerprint.seed != self.seed {
            return;
        }
        let target = fingerprint.target;
        let (quick, full) = (fingerprint.hash, self.full_hash(target, subject_token));
        // The quick slot, unless another token's live entry holds it; the other slot keeps no
        // older entry of this token's.
        let quick_is_another_s = self.entries.get(&quick).is_some_and(|e| now < e.until)
            && self.own_entry(quick, target, subject_token).is_none();
        let (slot, other) = match quick_is_another_s {
            true => (full, quick),
            false => (quick, full),
        };
        if other != slot && self.own_entry(other, target, subject_token).is_some() {
            self.entries.remove(&other);
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&slot) {
            // Room for an eighth of the capacity at once: see the design document, front cache.
            self.entries.retain(|_, e| now < e.until);
            let keep = self.capacity - self.capacity.div_ceil(8);
            if self.entries.len() > keep {
                self.drop_least_recently_used(self.entries.len() - keep, now);
            }
        }
        self.entries.insert(
            slot,
            FrontEntry {
                authorization,
                key,
                until: use_until,
                refresh_at,
                last_used: Cell::new(now),
                target,
                subject: subject_token.into(),
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
        subject_token: &[u8],
        key: CacheKey,
        token: &str,
        times: (u64, u64),
        now: u64,
    ) -> Arc<str> {
        let authorization: Arc<str> = format!("Bearer {token}").into();
        self.put(
            fingerprint,
            subject_token,
            key,
            authorization.clone(),
            times,
            now,
        );
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

    /// A request's way into the cache: its fingerprint and subject token.
    struct User(Fingerprint, Vec<u8>);

    fn user(c: &FrontCache, target: usize, subject: &[u8]) -> User {
        User(c.fingerprint(target, subject), subject.to_vec())
    }

    fn put(c: &mut FrontCache, u: &User, key: CacheKey, auth: &str, until: (u64, u64), now: u64) {
        c.put(u.0, &u.1, key, auth.into(), until, now);
    }

    fn get<'c>(c: &'c FrontCache, u: &User, now: u64) -> Option<&'c FrontEntry> {
        c.get(&u.0, &u.1, now)
    }

    /// The `Authorization` the entry found would set.
    fn served<'c>(c: &'c FrontCache, u: &User, now: u64) -> Option<&'c str> {
        get(c, u, now).map(|e| &*e.authorization)
    }

    /// Keeps an entry for the subject token `subject` (target 0), usable until `until`, at `now`.
    fn put_user(c: &mut FrontCache, subject: &[u8], until: u64, now: u64) -> User {
        let u = user(c, 0, subject);
        put(c, &u, key(1), "Bearer a", (until, until), now);
        u
    }

    #[test]
    fn entry_is_served_until_its_token_ends() {
        let mut c = FrontCache::new(10);
        let u = user(&c, 0, b"subject");
        put(&mut c, &u, key(1), "Bearer a", (1_000, 900), 100);
        assert_eq!(served(&c, &u, 999), Some("Bearer a"));
        assert!(get(&c, &u, 1_000).is_none());
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
            "seeded per worker"
        );
    }

    #[test]
    fn an_entry_is_served_only_to_its_own_subject_token_and_target() {
        // Another token or target that meets the entry's hash (forced here by reusing the
        // fingerprint) is not served the entry's token.
        let mut c = FrontCache::new(10);
        let alice = user(&c, 0, b"alice");
        put(
            &mut c,
            &alice,
            key(1),
            "Bearer for-alice",
            (1_000, 900),
            100,
        );
        assert!(c.get(&alice.0, b"mallory", 100).is_none());
        assert!(c.get(&alice.0, b"alic", 100).is_none());
        let other_target = Fingerprint {
            target: 1,
            ..alice.0
        };
        assert!(c.get(&other_target, b"alice", 100).is_none());
        assert!(get(&c, &alice, 100).is_some());
    }

    #[test]
    fn the_vm_s_comparison_tells_equal_bytes_from_unequal_ones() {
        let token: Vec<u8> = (0..1_603u32).map(|i| (i % 251) as u8).collect();
        assert!(same_words(&token, &token.clone()));
        assert!(same_words(b"", b""));
        for at in [0, 7, 8, 800, 1_599, 1_600, 1_602] {
            let mut other = token.clone();
            other[at] ^= 1;
            assert!(!same_words(&token, &other), "differs at {at}");
        }
        assert!(!same_words(&token, &token[..1_602]));
        assert!(!same_words(&token[..8], &token[..9]));
    }

    #[test]
    fn a_cache_takes_no_entry_by_another_cache_s_fingerprint() {
        // An exchange begun before the configuration was loaded again ends in the new cache.
        let old = FrontCache::new(10);
        let mut new = FrontCache::new(10);
        let stale = user(&old, 0, b"alice");
        put(&mut new, &stale, key(1), "Bearer a", (1_000, 900), 100);
        assert!(new.is_empty());
    }

    #[test]
    fn a_cache_serves_no_entry_by_another_cache_s_fingerprint() {
        // Its full-hash fallback would find the entry by the target index, which a configuration
        // loaded again may give another target.
        let old = FrontCache::new(10);
        let mut new = FrontCache::new(10);
        let (token, alike_token) = (alike(100, b'a'), alike(100, b'b'));
        let first = user(&new, 0, &alike_token);
        put(&mut new, &first, key(2), "Bearer b", (1_000, 900), 100);
        // Its quick slot is the first token's: it is kept at its full one.
        let mine = user(&new, 0, &token);
        put(&mut new, &mine, key(1), "Bearer a", (1_000, 900), 100);
        assert!(get(&new, &user(&old, 0, &token), 100).is_none());
        assert!(get(&new, &mine, 100).is_some());
    }

    #[test]
    fn size_stays_within_capacity() {
        let mut c = FrontCache::new(8);
        for i in 0..1_000 {
            let u = user(&c, 0, i.to_string().as_bytes());
            put(&mut c, &u, key(1), "Bearer a", (10_000, 10_000), 100);
            assert!(c.len() <= 8);
            assert_eq!(served(&c, &u, 100), Some("Bearer a"));
        }
    }

    #[test]
    fn a_full_cache_first_makes_room_from_expired_entries() {
        let mut c = FrontCache::new(8);
        let users: Vec<User> = (0..8u8).map(|i| user(&c, 0, &[i])).collect();
        for (i, u) in users.iter().enumerate() {
            let until = if i == 3 { 150 } else { 10_000 };
            put(&mut c, u, key(1), "Bearer a", (until, until), 100);
        }
        let new = user(&c, 0, b"new");
        put(&mut c, &new, key(1), "Bearer a", (10_000, 10_000), 200);
        assert_eq!(c.len(), 8, "only the expired entry made room");
        assert!(users
            .iter()
            .enumerate()
            .all(|(i, u)| i == 3 || get(&c, u, 200).is_some()));
    }

    #[test]
    fn forget_drops_the_entries_of_a_key() {
        let mut c = FrontCache::new(8);
        let (a, b) = (user(&c, 0, b"a"), user(&c, 0, b"b"));
        put(&mut c, &a, key(1), "Bearer a", (10_000, 10_000), 100);
        put(&mut c, &b, key(2), "Bearer b", (10_000, 10_000), 100);
        c.forget(&key(1));
        assert!(get(&c, &a, 100).is_none());
        assert!(get(&c, &b, 100).is_some());
    }

    #[test]
    fn users_who_came_back_recently_stay_when_a_full_cache_makes_room() {
        // The cache is full of entries nobody has used for an hour; then 32 users come, again
        // and again. Room is made from the unused entries, so after the first round every one of
        // those users is served from the cache.
        let mut c = FrontCache::new(64);
        for i in 0..64u32 {
            let stale = user(&c, 1, &i.to_le_bytes());
            put(
                &mut c,
                &stale,
                key(1),
                "Bearer old",
                (100_000, 100_000),
                100,
            );
        }
        let users: Vec<User> = (0..32u32).map(|i| user(&c, 0, &i.to_le_bytes())).collect();
        let mut misses_in_last_round = 0;
        for round in 0..4 {
            for (i, u) in users.iter().enumerate() {
                let now = 3_700 + round * 10 + i as u64 / 8;
                if get(&c, u, now).is_none() {
                    put(&mut c, u, key(2), "Bearer a", (100_000, 100_000), now);
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
        let users: Vec<User> = (0..16u8)
            .map(|i| put_user(&mut c, &[i], 100_000, if i < 2 { 100 } else { 1_500 }))
            .collect();
        put_user(&mut c, b"new", 100_000, 2_000);
        assert_eq!(c.len(), 15, "two made room for one");
        assert!(get(&c, &users[0], 2_000).is_none() && get(&c, &users[1], 2_000).is_none());
        assert!(users[2..].iter().all(|u| get(&c, u, 2_000).is_some()));
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

    /// 1,600-byte tokens alike but for byte `at` (outside the quick hash's sample for 100).
    fn alike(at: usize, byte: u8) -> Vec<u8> {
        let mut token = vec![b'x'; 1_600];
        token[at] = byte;
        token
    }

    #[test]
    fn the_quick_hash_reads_the_length_the_middle_and_the_end() {
        let c = FrontCache::new(10);
        let quick = |t: &[u8]| c.fingerprint(0, t);
        assert_eq!(quick(&alike(100, b'a')), quick(&alike(100, b'b')));
        assert_ne!(quick(&alike(800, b'a')), quick(&alike(800, b'b')));
        assert_ne!(quick(&alike(1_599, b'a')), quick(&alike(1_599, b'b')));
        assert_ne!(quick(&alike(100, b'a')), quick(&alike(100, b'a')[..1_599]));
    }

    #[test]
    fn tokens_whose_samples_meet_are_each_served_from_their_own_entry() {
        let mut c = FrontCache::new(10);
        let (a, b) = (
            user(&c, 0, &alike(100, b'a')),
            user(&c, 0, &alike(100, b'b')),
        );
        assert_eq!(a.0, b.0, "same quick slot");
        put(&mut c, &a, key(1), "Bearer for-a", (10_000, 10_000), 100);
        put(&mut c, &b, key(2), "Bearer for-b", (10_000, 10_000), 100);
        for _ in 0..3 {
            assert_eq!(served(&c, &a, 200), Some("Bearer for-a"));
            assert_eq!(served(&c, &b, 200), Some("Bearer for-b"));
        }
        // Each token keeps one entry, wherever it is put again.
        put(&mut c, &b, key(2), "Bearer for-b2", (10_000, 10_000), 300);
        c.forget(&key(1));
        put(&mut c, &b, key(2), "Bearer for-b3", (10_000, 10_000), 400);
        assert_eq!(c.len(), 1);
        assert_eq!(served(&c, &b, 400), Some("Bearer for-b3"));
        assert!(get(&c, &a, 400).is_none());
    }

    #[test]
    fn an_expired_entry_gives_up_its_quick_slot() {
        let mut c = FrontCache::new(10);
        let (a, b) = (
            user(&c, 0, &alike(100, b'a')),
            user(&c, 0, &alike(100, b'b')),
        );
        put(&mut c, &a, key(1), "Bearer for-a", (150, 150), 100);
        put(&mut c, &b, key(2), "Bearer for-b", (10_000, 10_000), 200);
        assert_eq!(c.len(), 1, "b took the quick slot of a's ended entry");
        assert!(get(&c, &a, 200).is_none());
        assert!(get(&c, &b, 200).is_some());
    }

    #[test]
    fn clear_drops_everything() {
        let mut c = FrontCache::new(8);
        put_user(&mut c, b"a", 10_000, 100);
        c.clear();
        assert!(c.is_empty());
    }

    #[test]
    fn zero_capacity_keeps_nothing() {
        let mut c = FrontCache::new(0);
        put_user(&mut c, b"a", 10_000, 100);
        assert!(c.is_empty());
    }
}
