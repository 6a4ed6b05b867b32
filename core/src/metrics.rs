//! The filter's metrics, as they appear in Envoy's `/stats` (prefixed `wasmcustom.`) and
//! `/stats/prometheus`. Defined once per worker when the filter is configured; a request only
//! increments them.

use crate::token_response::ExchangeFailure;

/// The counters. Exchanges are counted once each, by their final outcome (after the one retry);
/// requests once each, by what the filter did with them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    /// Requests sent on with a cached token.
    CacheHits,
    /// Of those, the ones the worker's front cache did not hold: the token was read from the
    /// shared cache (a SHA-256 over the subject token and a shared-data read). Many of them mean
    /// `cache.worker_entries` is smaller than the users one worker serves.
    CacheHitsShared,
    /// Requests for which no token was cached: they go on to the local checks and an exchange.
    CacheMisses,
    /// Requests forwarded as they came: no target matched and `unmatched` is `passthrough` (or
    /// `strip` and the request had no `Authorization`), or a `client_credentials` target kept the
    /// caller's `Authorization` (`existing_authorization: keep`).
    PassedThrough,
    /// Requests no target matched, forwarded without their `Authorization` (`unmatched: strip`).
    UnmatchedStripped,
    /// Requests the filter answered itself without asking the IdP: no or bad bearer token, no
    /// target (`unmatched: deny`), a remembered `invalid_grant` or claims challenge, a scope backing
    /// off.
    RejectedLocally,
    /// Requests refused because the exchange they waited for failed.
    FailedExchange,
    /// Requests answered 503 at once because their worker already had
    /// `max_exchanges_in_flight_per_worker` exchanges in flight (also counted as rejected locally).
    OverExchangeLimit,
    ExchangesOk,
    ExchangesInvalidGrant,
    /// `interaction_required`, or any answer with a claims challenge.
    ExchangesInteractionRequired,
    /// HTTP 429 from the IdP.
    ExchangesThrottled,
    /// The IdP answered 5xx or something unusable, could not be reached, or the token request
    /// could not be sent.
    ExchangesUpstreamError,
    ExchangesTimeout,
    /// Token requests Envoy answered itself: the token cluster's circuit breakers overflowed or it
    /// had no healthy host. They do not make the scope back off.
    ExchangesRefusedByEnvoy,
    /// Client assertions signed (`private_key_jwt`); one serves several token requests for
    /// `client_assertion.reuse_s`.
    ClientAssertionsSigned,
    /// Upstream answers 401 (or gRPC `UNAUTHENTICATED`) `error="insufficient_claims"` (continuous
    /// access evaluation, or a Conditional Access authentication context) that dropped the cached
    /// token they were sent with; the next request for it exchanges again.
    UpstreamClaimsChallenges,
    /// Such answers that dropped nothing, because this worker had dropped the token for the same
    /// user and scope less than `cache.claims_challenge_holdoff_s` before; they go back to the
    /// caller as they came.
    UpstreamClaimsChallengesKept,
}

impl Counter {
    pub const ALL: [Counter; 18] = [
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
            Counter::UpstreamClaimsChallenges => "obo_upstream_claims_challenges",
            Counter::UpstreamClaimsChallengesKept => "obo_upstream_claims_challenges_kept",
        }
    }

    /// The position of this counter in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The outcome counter of a failed exchange.
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

/// The histogram of exchange latency: from the first token request of an exchange to its final
/// answer, in milliseconds (a retry included).
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
