//! A scope's backoff after the IdP throttled or failed, in shared data so every worker backs off.

use sha2::{Digest, Sha256};

use crate::config::{BackoffSettings, Provider};
use crate::host::Host;
use crate::token_response::ExchangeFailure;

use crate::shared_data::BACKOFF_PREFIX as PREFIX;

/// The key of a scope's backoff; per tenant where the endpoint is, so that one tenant's
/// throttling never refuses another tenant's users.
pub fn scope_key(provider: &Provider, tenant: Option<&str>, scope: &str) -> String {
    let mut hasher = Sha256::new();
    let (endpoint, grant) = (provider.token_endpoint.url.as_str(), provider.grant.name());
    for field in [endpoint, &provider.client_id, grant, scope] {
        hasher.update((field.len() as u64).to_be_bytes());
        hasher.update(field.as_bytes());
    }
    if let Some(tenant) = tenant {
        hasher.update((tenant.len() as u64).to_be_bytes());
        hasher.update(tenant.as_bytes());
    }
    let digest = hasher.finalize();
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{PREFIX}{hex}")
}

pub fn remaining_s(host: &dyn Host, key: &str, now_ms: u64) -> Option<u64> {
    let value = host.shared_get(key)?;
    let until_ms = u64::from_be_bytes(*value.first_chunk::<8>()?);
    (until_ms > now_ms).then(|| (until_ms - now_ms).div_ceil(1000))
}

/// Starts (or lengthens) a backoff of `wait_s` seconds.
pub fn start(host: &dyn Host, key: &str, now_ms: u64, wait_s: u64) {
    let until_ms = now_ms.saturating_add(wait_s.saturating_mul(1000));
    if remaining_s(host, key, now_ms).is_some_and(|left| left * 1000 >= until_ms - now_ms) {
        return;
    }
    host.shared_set(key, &until_ms.to_be_bytes());
}

/// The IdP's `Retry-After` (capped) for a 429; the default for a 5xx, unreachable or timeout.
pub fn wait_for(failure: &ExchangeFailure, settings: &BackoffSettings) -> Option<u64> {
    let wait = match failure {
        ExchangeFailure::Throttled { retry_after, .. } => retry_after
            .as_deref()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(settings.default_s, |s| s.min(settings.max_s)),
        ExchangeFailure::IdpError { status, .. } if *status >= 500 => settings.default_s,
        ExchangeFailure::Unreachable | ExchangeFailure::Timeout => settings.default_s,
        _ => return None,
    };
    (wait > 0).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::FakeHost;

    const SETTINGS: BackoffSettings = BackoffSettings {
        default_s: 5,
        max_s: 60,
    };

    fn throttled(retry_after: Option<&str>) -> ExchangeFailure {
        ExchangeFailure::Throttled {
            retry_after: retry_after.map(str::to_string),
            idp: None,
        }
    }

    #[test]
    fn throttling_waits_for_retry_after_capped() {
        assert_eq!(wait_for(&throttled(Some("30")), &SETTINGS), Some(30));
        assert_eq!(wait_for(&throttled(Some("3600")), &SETTINGS), Some(60));
        assert_eq!(
            wait_for(&throttled(Some("Wed, 21 Oct 2015 07:28:00 GMT")), &SETTINGS),
            Some(5)
        );
        assert_eq!(wait_for(&throttled(None), &SETTINGS), Some(5));
    }

    #[test]
    fn server_errors_wait_the_default_and_client_errors_not_at_all() {
        let e = |status| ExchangeFailure::IdpError { status, idp: None };
        assert_eq!(wait_for(&e(500), &SETTINGS), Some(5));
        assert_eq!(wait_for(&e(503), &SETTINGS), Some(5));
        assert_eq!(wait_for(&ExchangeFailure::Unreachable, &SETTINGS), Some(5));
        assert_eq!(wait_for(&ExchangeFailure::Timeout, &SETTINGS), Some(5));
        assert_eq!(wait_for(&e(400), &SETTINGS), None);
        let grant = ExchangeFailure::InvalidGrant(Box::default());
        assert_eq!(wait_for(&grant, &SETTINGS), None);
    }

    #[test]
    fn zero_default_disables_backoff() {
        let off = BackoffSettings {
            default_s: 0,
            max_s: 60,
        };
        assert_eq!(wait_for(&ExchangeFailure::Unreachable, &off), None);
    }

    #[test]
    fn backoff_counts_down_and_ends() {
        let host = FakeHost::default();
        start(&host, "k", 10_000, 5);
        assert_eq!(remaining_s(&host, "k", 10_000), Some(5));
        assert_eq!(remaining_s(&host, "k", 14_001), Some(1));
        assert_eq!(remaining_s(&host, "k", 15_000), None);
    }

    #[test]
    fn a_shorter_wait_never_cuts_a_longer_one() {
        let host = FakeHost::default();
        start(&host, "k", 0, 60);
        start(&host, "k", 1_000, 5);
        assert_eq!(remaining_s(&host, "k", 1_000), Some(59));
    }
}
