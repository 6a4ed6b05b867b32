//! The cache key: SHA-256 over length-prefixed fields, so no two tuples frame to the same bytes.
//! The subject token is never stored; only this digest is.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    /// Who asks (endpoint, client), by which grant, for what (scope or audience), for whom.
    pub fn derive(
        token_endpoint: &str,
        client_id: &str,
        grant: &str,
        resource: &str,
        subject_token: &str,
    ) -> Self {
        let mut hasher = Sha256::new();
        for field in [token_endpoint, client_id, grant, resource, subject_token] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        CacheKey(hasher.finalize().into())
    }

    pub fn slot(&self, slots: u32) -> u32 {
        let mut head = [0u8; 8];
        head.copy_from_slice(&self.0[..8]);
        (u64::from_be_bytes(head) % u64::from(slots.max(1))) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_fields_give_the_same_key() {
        assert_eq!(
            CacheKey::derive("e", "c", "g", "s", "t"),
            CacheKey::derive("e", "c", "g", "s", "t")
        );
    }

    #[test]
    fn every_field_changes_the_key() {
        let base = CacheKey::derive("e", "c", "g", "s", "t");
        assert_ne!(base, CacheKey::derive("E", "c", "g", "s", "t"));
        assert_ne!(base, CacheKey::derive("e", "C", "g", "s", "t"));
        assert_ne!(base, CacheKey::derive("e", "c", "g", "S", "t"));
        assert_ne!(base, CacheKey::derive("e", "c", "g", "s", "T"));
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_key() {
        // sha256(subject_token + scope) would collide here; the length prefix does not.
        assert_ne!(
            CacheKey::derive("e", "c", "g", "api://a/.default", "tokenX"),
            CacheKey::derive("e", "c", "g", "api://a/.defaultt", "okenX")
        );
    }

    #[test]
    fn slot_is_within_bounds() {
        for i in 0..200 {
            let key = CacheKey::derive("e", "c", "g", "s", &i.to_string());
            assert!(key.slot(7) < 7);
            assert_eq!(key.slot(1), 0);
        }
    }
}
