//! The counters and latency histogram, defined once per worker; docs/metrics.md tells each.

use crate::token_response::ExchangeFailure;

/// Exchanges count once, by their outcome after the one retry; requests once, by what was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    CacheHits,
    CacheHitsShared,
    CacheMisses,
    PassedThrough,
    UnmatchedStripped,
    RejectedLocally,
    FailedExchange,
    OverExchangeLimit,
    ExchangesOk,
    ExchangesInvalidGrant,
    ExchangesInteractionRequired,
    ExchangesThrottled,
    ExchangesUpstreamError,
    ExchangesTimeout,
    ExchangesRefusedByEnvoy,
    ClientAssertionsSigned,
    ClientAssertionFetches,
    ClientAssertionFetchFailures,
    UpstreamClaimsChallenges,
    UpstreamClaimsChallengesKept,
}

impl Counter {
    pub const ALL: [Counter; 20] = [
        Counter::CacheHits,
        Counter::CacheHitsShared,
        Counter::CacheMisses,
        Counter::PassedThrough,
        Counter::UnmatchedStripped,
        Counter::RejectedLocally,
        Counter::FailedExchange,
        Counter::OverExchangeLimit,
        Counter::ExchangesOk,
        Counter::ExchangesInvalidGrant,
        Counter::ExchangesInteractionRequired,
        Counter::ExchangesThrottled,
        Counter::ExchangesUpstreamError,
        Counter::ExchangesTimeout,
        Counter::ExchangesRefusedByEnvoy,
        Counter::ClientAssertionsSigned,
        Counter::ClientAssertionFetches,
        Counter::ClientAssertionFetchFailures,
        Counter::UpstreamClaimsChallenges,
        Counter::UpstreamClaimsChallengesKept,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Counter::CacheHits => "obo_cache_hits",
            Counter::CacheHitsShared => "obo_cache_hits_shared",
            Counter::CacheMisses => "obo_cache_misses",
            Counter::PassedThrough => "obo_requests_passed_through",
            Counter::UnmatchedStripped => "obo_requests_unmatched_stripped",
            Counter::RejectedLocally => "obo_requests_rejected_locally",
            Counter::FailedExchange => "obo_requests_failed_exchange",
            Counter::OverExchangeLimit => "obo_requests_over_exchange_limit",
            Counter::ExchangesOk => "obo_exchanges_ok",
            Counter::ExchangesInvalidGrant => "obo_exchanges_invalid_grant",
            Counter::ExchangesInteractionRequired => "obo_exchanges_interaction_required",
            Counter::ExchangesThrottled => "obo_exchanges_throttled",
            Counter::ExchangesUpstreamError => "obo_exchanges_upstream_error",
            Counter::ExchangesTimeout => "obo_exchanges_timeout",
            Counter::ExchangesRefusedByEnvoy => "obo_exchanges_refused_by_envoy",
            Counter::ClientAssertionsSigned => "obo_client_assertions_signed",
            Counter::ClientAssertionFetches => "obo_client_assertion_fetches",
            Counter::ClientAssertionFetchFailures => "obo_client_assertion_fetch_failures",
            Counter::UpstreamClaimsChallenges => "obo_upstream_claims_challenges",
            Counter::UpstreamClaimsChallengesKept => "obo_upstream_claims_challenges_kept",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn for_failure(failure: &ExchangeFailure) -> Counter {
        match failure {
            ExchangeFailure::InvalidGrant(_) => Counter::ExchangesInvalidGrant,
            ExchangeFailure::ClaimsChallenge(_) => Counter::ExchangesInteractionRequired,
            ExchangeFailure::Throttled { .. } => Counter::ExchangesThrottled,
            ExchangeFailure::Timeout => Counter::ExchangesTimeout,
            ExchangeFailure::RefusedByEnvoy => Counter::ExchangesRefusedByEnvoy,
            ExchangeFailure::Unreachable
            | ExchangeFailure::IdpError { .. }
            | ExchangeFailure::BadAnswer(_) => Counter::ExchangesUpstreamError,
        }
    }
}

/// From an exchange's first token request to its final answer (a retry included).
pub const EXCHANGE_LATENCY_MS: &str = "obo_exchange_latency_ms";

/// `obo_tenant_exchange_failures.<tid>`: a tenant's failed exchanges, defined on a worker the
/// first time one of that tenant's exchanges fails there.
pub const TENANT_EXCHANGE_FAILURES: &str = "obo_tenant_exchange_failures";

/// With `allowed_tenants: ["*"]` callers choose the tid, and Envoy keeps every stat name until it
/// restarts: past this many tenants a worker counts the rest together, as `other`.
pub const MAX_TENANT_COUNTERS: usize = 100;

/// A worker's counters of failed exchanges by tenant, as the host's metric ids.
#[derive(Debug, Default)]
pub struct TenantCounters<Id> {
    named: Vec<(String, Id)>,
    other: Option<Id>,
}

impl<Id: Copy> TenantCounters<Id> {
    pub const fn new() -> Self {
        TenantCounters {
            named: Vec::new(),
            other: None,
        }
    }

    /// The counter of `tenant`, defined by `define(stat name)` the first time: its own, or
    /// `other` past the cap or for a tenant that is not a lowercase GUID's characters (the tid
    /// is one already; the check keeps anything else out of a stat name). None if the host
    /// refused to define it.
    pub fn counter(&mut self, tenant: &str, define: impl FnOnce(&str) -> Option<Id>) -> Option<Id> {
        if let Some((_, id)) = self.named.iter().find(|(named, _)| named == tenant) {
            return Some(*id);
        }
        let fits_a_stat_name = !tenant.is_empty()
            && tenant
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f' | b'-'));
        if fits_a_stat_name && self.named.len() < MAX_TENANT_COUNTERS {
            let id = define(&format!("{TENANT_EXCHANGE_FAILURES}.{tenant}"))?;
            self.named.push((tenant.to_string(), id));
            return Some(id);
        }
        if self.other.is_none() {
            self.other = define(&format!("{TENANT_EXCHANGE_FAILURES}.other"));
        }
        self.other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_has_its_own_prefixed_name_and_index() {
        let mut names: Vec<&str> = Counter::ALL.iter().map(|c| c.name()).collect();
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        assert!(names.iter().all(|n| n.starts_with("obo_")));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
    }

    /// Defines each name as the next id, and keeps the names.
    fn define_into(names: &mut Vec<String>) -> impl FnOnce(&str) -> Option<usize> + '_ {
        |name| {
            names.push(name.to_string());
            Some(names.len() - 1)
        }
    }

    #[test]
    fn a_tenants_counter_is_defined_once_and_named_after_its_tid() {
        let (mut counters, mut names) = (TenantCounters::new(), Vec::new());
        let tid = "4c1f7a2e-93b5-4d6e-8f01-2a3b4c5d6e7f";
        let first = counters.counter(tid, define_into(&mut names));
        assert_eq!(counters.counter(tid, define_into(&mut names)), first);
        assert_eq!(names, [format!("obo_tenant_exchange_failures.{tid}")]);
    }

    #[test]
    fn anything_but_a_lowercase_guids_characters_counts_as_other() {
        for odd in ["", "A1B2", "a.b", "a_b", "x y", "a\nb", "other"] {
            let mut names = Vec::new();
            TenantCounters::new().counter(odd, define_into(&mut names));
            assert_eq!(names, ["obo_tenant_exchange_failures.other"], "{odd:?}");
        }
    }
}
