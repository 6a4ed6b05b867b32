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
}
