//! The token cache in shared data: a fixed table of `max_entries` slots (shared data has no delete
//! and no TTL), each holding the full key, until when it is used, and a token or a refusal.

use crate::cache_key::CacheKey;
use crate::host::Host;

use crate::shared_data::SLOT_PREFIX;
const HEADER_LEN: usize = 32 + 8 + 1;
const KIND_TOKEN: u8 = 0;
const KIND_REJECTED: u8 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// Seconds since the epoch.
    Token {
        token: String,
        until: u64,
        refresh_at: u64,
    },
    /// Entra ID refused this subject token for this scope a moment ago: its error, as JSON.
    Rejected(String),
}

#[derive(Debug, Clone, Copy)]
pub struct TokenCache {
    slots: u32,
}

impl TokenCache {
    pub fn new(slots: u32) -> Self {
        TokenCache {
            slots: slots.max(1),
        }
    }

    pub fn slots(&self) -> u32 {
        self.slots
    }

    pub fn slot_name(&self, key: &CacheKey) -> String {
        format!("{SLOT_PREFIX}{}", key.slot(self.slots))
    }

    pub fn get(&self, host: &dyn Host, key: &CacheKey, now: u64) -> Option<Cached> {
        let value = host.shared_get(&self.slot_name(key))?;
        let (stored_key, rest) = value.split_first_chunk::<32>()?;
        let (use_until, rest) = rest.split_first_chunk::<8>()?;
        let (kind, payload) = rest.split_first()?;
        let until = u64::from_be_bytes(*use_until);
        if stored_key != &key.0 || now >= until {
            return None;
        }
        match *kind {
            KIND_TOKEN => {
                let (refresh_at, token) = payload.split_first_chunk::<8>()?;
                Some(Cached::Token {
                    token: String::from_utf8(token.to_vec()).ok()?,
                    until,
                    refresh_at: u64::from_be_bytes(*refresh_at),
                })
            }
            KIND_REJECTED => Some(Cached::Rejected(String::from_utf8(payload.to_vec()).ok()?)),
            _ => None,
        }
    }

    pub fn put(
        &self,
        host: &dyn Host,
        key: &CacheKey,
        token: &str,
        use_until: u64,
        refresh_at: u64,
    ) -> bool {
        let mut payload = Vec::with_capacity(8 + token.len());
        payload.extend_from_slice(&refresh_at.to_be_bytes());
        payload.extend_from_slice(token.as_bytes());
        self.write(host, key, use_until, KIND_TOKEN, &payload)
    }

    /// After a failed refresh: keeps the token, and tries again from `refresh_at`.
    pub fn postpone_refresh(&self, host: &dyn Host, key: &CacheKey, refresh_at: u64, now: u64) {
        if let Some(Cached::Token { token, until, .. }) = self.get(host, key, now) {
            self.put(host, key, &token, until, refresh_at.min(until));
        }
    }

    pub fn put_rejection(
        &self,
        host: &dyn Host,
        key: &CacheKey,
        error_json: &str,
        use_until: u64,
    ) -> bool {
        self.write(host, key, use_until, KIND_REJECTED, error_json.as_bytes())
    }

    /// Drops whatever the slot holds for `key` (and only for `key`).
    pub fn forget(&self, host: &dyn Host, key: &CacheKey) {
        let holds_key = host
            .shared_get(&self.slot_name(key))
            .is_some_and(|v| v.get(..32) == Some(&key.0[..]));
        if holds_key {
            self.write(host, key, 0, KIND_TOKEN, b"");
        }
    }

    fn write(
        &self,
        host: &dyn Host,
        key: &CacheKey,
        use_until: u64,
        kind: u8,
        payload: &[u8],
    ) -> bool {
        let mut value = Vec::with_capacity(HEADER_LEN + payload.len());
        value.extend_from_slice(&key.0);
        value.extend_from_slice(&use_until.to_be_bytes());
        value.push(kind);
        value.extend_from_slice(payload);
        host.shared_set(&self.slot_name(key), &value)
    }
}

/// The last `window_s` seconds or `percent` of the lifetime, whichever is shorter (0: never).
pub fn refresh_at(now: u64, until: u64, window_s: u64, percent: u64) -> u64 {
    let lifetime = until.saturating_sub(now);
    until
        - window_s
            .min(lifetime.saturating_mul(percent) / 100)
            .min(lifetime)
}

/// `issued_at + expires_in - skew`, never past `no_later_than` (the subject token's `exp`, the
/// actor token's end); None when that is over (the token is then used once, not cached).
pub fn use_until(now: u64, expires_in: u64, skew: u64, no_later_than: Option<u64>) -> Option<u64> {
    let by_lifetime = now.saturating_add(expires_in).checked_sub(skew)?;
    let until = no_later_than.map_or(by_lifetime, |end| end.min(by_lifetime));
    (until > now).then_some(until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    fn token(t: &str) -> Cached {
        Cached::Token {
            token: t.to_string(),
            until: 1_000,
            refresh_at: 900,
        }
    }

    fn key(n: u32) -> CacheKey {
        CacheKey::derive("e", "c", "g", "s", &format!("user-{n}"))
    }

    #[test]
    fn stored_token_is_returned_until_its_time_is_over() {
        let host = FakeHost::default();
        let cache = TokenCache::new(10);
        assert!(cache.put(&host, &key(1), "tok-1", 1_000, 900));
        assert_eq!(cache.get(&host, &key(1), 999), Some(token("tok-1")));
        assert_eq!(cache.get(&host, &key(1), 1_000), None);
    }

    #[test]
    fn another_key_in_the_same_slot_is_a_miss_not_a_wrong_token() {
        let host = FakeHost::default();
        let cache = TokenCache::new(1);
        cache.put(&host, &key(1), "tok-1", 1_000, 900);
        assert_eq!(cache.get(&host, &key(2), 10), None);
        cache.put(&host, &key(2), "tok-2", 1_000, 900);
        assert_eq!(cache.get(&host, &key(2), 10), Some(token("tok-2")));
        assert_eq!(cache.get(&host, &key(1), 10), None);
    }

    #[test]
    fn shared_data_keys_stay_bounded_by_max_entries() {
        let host = FakeHost::default();
        let cache = TokenCache::new(16);
        for n in 0..5_000 {
            cache.put(&host, &key(n), "t", 1_000, 900);
        }
        assert!(host.shared_keys() <= 16, "{} keys", host.shared_keys());
    }

    #[test]
    fn raw_subject_token_is_never_stored() {
        let host = FakeHost::default();
        let cache = TokenCache::new(4);
        let k = CacheKey::derive("e", "c", "g", "s", "the-subject-token");
        cache.put(&host, &k, "tok", 1_000, 900);
        assert!(!host.shared_contains(b"the-subject-token"));
    }

    #[test]
    fn corrupt_slot_values_are_misses() {
        let host = FakeHost::default();
        let cache = TokenCache::new(1);
        host.shared_set(&cache.slot_name(&key(1)), b"short");
        assert_eq!(cache.get(&host, &key(1), 0), None);
    }

    #[test]
    fn rejection_is_remembered_until_its_time_is_over() {
        let host = FakeHost::default();
        let cache = TokenCache::new(10);
        cache.put_rejection(&host, &key(1), r#"{"error":"invalid_grant"}"#, 105);
        assert_eq!(
            cache.get(&host, &key(1), 104),
            Some(Cached::Rejected(r#"{"error":"invalid_grant"}"#.into()))
        );
        assert_eq!(cache.get(&host, &key(1), 105), None);
    }

    #[test]
    fn forget_drops_only_its_own_key() {
        let host = FakeHost::default();
        let cache = TokenCache::new(1);
        cache.put(&host, &key(1), "tok-1", 1_000, 900);
        cache.forget(&host, &key(2));
        assert_eq!(cache.get(&host, &key(1), 10), Some(token("tok-1")));
        cache.forget(&host, &key(1));
        assert_eq!(cache.get(&host, &key(1), 10), None);
    }

    #[test]
    fn refresh_window_is_the_shorter_of_seconds_and_percent() {
        // An hour-long token: 10% is 360 s, so the last 300 s.
        assert_eq!(refresh_at(0, 3_600, 300, 10), 3_300);
        // A ten-minute token: 10% is 60 s.
        assert_eq!(refresh_at(0, 600, 300, 10), 540);
        assert_eq!(refresh_at(0, 600, 0, 10), 600, "off");
        assert_eq!(refresh_at(0, 600, 300, 0), 600, "off");
    }

    #[test]
    fn postponed_refresh_keeps_the_token() {
        let host = FakeHost::default();
        let cache = TokenCache::new(4);
        cache.put(&host, &key(1), "tok-1", 1_000, 900);
        cache.postpone_refresh(&host, &key(1), 950, 910);
        assert_eq!(
            cache.get(&host, &key(1), 910),
            Some(Cached::Token {
                token: "tok-1".into(),
                until: 1_000,
                refresh_at: 950
            })
        );
    }

    #[test]
    fn lifetime_is_expires_in_minus_skew() {
        assert_eq!(use_until(1_000, 3_599, 60, None), Some(4_539));
        assert_eq!(use_until(1_000, 60, 60, None), None);
        assert_eq!(use_until(1_000, 10, 60, None), None);
    }

    #[test]
    fn lifetime_never_passes_the_subject_tokens_exp() {
        assert_eq!(use_until(1_000, 3_599, 60, Some(1_500)), Some(1_500));
        assert_eq!(use_until(1_000, 3_599, 60, Some(900)), None);
        assert_eq!(use_until(1_000, 100, 60, Some(5_000)), Some(1_040));
    }
}
