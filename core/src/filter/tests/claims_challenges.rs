//! Claims challenges: Entra ID's (remembered and answered the same), and an upstream's (which drop
//! the cached token, once per holdoff).

use crate::filter::Verdict;
use crate::host::Host;
use crate::metrics::Counter;
use crate::testing::{
    answer, assert_forwarded_with, fixture_answer, ok_answer, request_answered, request_from,
    upstream_asks_for_more_claims, worker, worker_with, FakeHost, U,
};

/// A user who must step up (MFA, a Conditional Access policy) gets the same challenge for the same
/// subject token until they bring a new one: their next requests are answered from memory for
/// `negative_cache_s`, not each with a token request.
#[test]
fn a_claims_challenge_from_entra_id_is_remembered_briefly_and_answered_the_same() {
    let host = FakeHost::default();
    let w = worker();
    let interaction_required = fixture_answer(400, "error-interaction-required.json");
    request_answered(&host, &w, 10, U, interaction_required);
    let first = host.stream(10).reply.unwrap();
    assert_eq!(first.status, 401);
    let (_f, v) = request_from(&host, &w, 11, U);
    assert_eq!(v, Verdict::Pause);
    let again = host.stream(11).reply.unwrap();
    assert_eq!(host.token_requests(), 1, "no second token request");
    assert_eq!(again.status, 401);
    assert_eq!(
        again.header("www-authenticate"),
        first.header("www-authenticate"),
        "the same challenge, claims included"
    );
    assert!(again
        .header("www-authenticate")
        .is_some_and(|c| c.contains("insufficient_claims") && c.contains("claims=")));
    host.now.set(host.now.get() + 5);
    request_from(&host, &w, 12, U);
    assert_eq!(
        host.token_requests(),
        2,
        "asked again after negative_cache_s"
    );
}

#[test]
fn upstream_insufficient_claims_drops_the_cached_token() {
    let host = FakeHost::default();
    let w = worker();
    let mut f = request_answered(&host, &w, 10, U, ok_answer("obo-1", 3599.into()));
    host.respond(10, &[(":status", "200")]);
    f.on_response_headers(&host);
    let (mut f2, v) = request_from(&host, &w, 11, U);
    assert_eq!(v, Verdict::Continue, "still cached after a 200");
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 0);
    upstream_asks_for_more_claims(&host, &mut f2, 11);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 1);
    assert_eq!(request_from(&host, &w, 12, U).1, Verdict::Pause);
    assert_eq!(host.token_requests(), 2);
}

/// gRPC carries `UNAUTHENTICATED` in an HTTP 200 (trailers-only: `grpc-status` among the headers).
#[test]
fn a_grpc_upstreams_unauthenticated_with_a_claims_challenge_drops_the_cached_token() {
    let host = FakeHost::default();
    let w = worker();
    let challenge = r#"Bearer error="insufficient_claims", claims="eyJ9""#;
    let mut f = request_answered(&host, &w, 10, U, ok_answer("obo-1", 3599.into()));
    // PERMISSION_DENIED is not a claims challenge, whatever header comes with it.
    host.respond(
        10,
        &[
            (":status", "200"),
            ("grpc-status", "7"),
            ("www-authenticate", challenge),
        ],
    );
    f.on_response_headers(&host);
    let (mut f, v) = request_from(&host, &w, 11, U);
    assert_eq!(v, Verdict::Continue, "still cached");
    host.respond(
        11,
        &[
            (":status", "200"),
            ("grpc-status", "16"),
            ("www-authenticate", challenge),
        ],
    );
    f.on_response_headers(&host);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 1);
    assert_eq!(request_from(&host, &w, 12, U).1, Verdict::Pause);
}

/// A challenge to the token that replaced a challenged one, within the holdoff: the upstream wants
/// what no new token from this subject token carries (an authentication context the user has not
/// met), so dropping it would make every request of this user a token request.
#[test]
fn a_worker_drops_a_key_for_a_claims_challenge_once_per_holdoff() {
    let host = FakeHost::default();
    let w = worker();
    let mut f = request_answered(&host, &w, 10, U, ok_answer("obo-1", 3599.into()));
    upstream_asks_for_more_claims(&host, &mut f, 10);
    let (mut f, v) = request_from(&host, &w, 11, U);
    assert_eq!(v, Verdict::Pause, "the first challenge dropped the token");
    answer(&host, &mut f, 1, ok_answer("obo-2", 3599.into()));
    host.now.set(host.now.get() + 59);
    upstream_asks_for_more_claims(&host, &mut f, 11);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 1);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallengesKept), 1);
    assert_forwarded_with(&host, &w, 12, U, "Bearer obo-2");
    assert_eq!(host.token_requests(), 2, "no token request");
    // 60 s (the default holdoff) after the drop, a challenge drops again.
    host.now.set(host.now.get() + 1);
    let (mut f, _) = request_from(&host, &w, 13, U);
    upstream_asks_for_more_claims(&host, &mut f, 13);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 2);
    assert_eq!(request_from(&host, &w, 14, U).1, Verdict::Pause);
    assert_eq!(host.token_requests(), 3);
}

#[test]
fn with_no_claims_challenge_holdoff_every_challenge_drops() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"cache": {"claims_challenge_holdoff_s": 0}}));
    for (nth, id) in [(0, 10), (1, 11), (2, 12)] {
        let (mut f, v) = request_from(&host, &w, id, U);
        assert_eq!(v, Verdict::Pause, "request {id} exchanged");
        let token = format!("obo-{id}");
        answer(&host, &mut f, nth, ok_answer(&token, 3599.into()));
        upstream_asks_for_more_claims(&host, &mut f, id);
    }
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 3);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallengesKept), 0);
}

#[test]
fn a_claims_challenge_the_filter_answered_itself_drops_nothing() {
    let host = FakeHost::default();
    let w = worker();
    let interaction_required = fixture_answer(400, "error-interaction-required.json");
    let mut f = request_answered(&host, &w, 10, U, interaction_required);
    let reply = host.stream(10).reply.unwrap();
    assert_eq!(reply.status, 401);
    assert!(reply
        .header("www-authenticate")
        .is_some_and(|c| c.contains("insufficient_claims")));
    // Envoy runs the response callbacks for the filter's own reply too.
    host.enter(10);
    f.on_response_headers(&host);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 0);
    assert_eq!(
        host.shared_get_versioned(crate::shared_data::DROPPED).0,
        None,
        "no drop announced"
    );
}
