//! When the exchange fails: each failure's status, the one retry, the backoff of a struggling
//! scope, and the refusals remembered for a few seconds.

use crate::exchange::CallAnswer;
use crate::filter::{RequestFilter, Verdict};
use crate::host::DispatchError;
use crate::metrics::Counter;
use crate::testing::{
    answer, answer_at_root, answer_every_try, assert_authorization, fixture_answer, no_answer,
    ok_answer, request, request_answered, request_from, server_error, tick, timed_out, worker,
    worker_with, FakeHost, ALICE, BOB, ROOT, SUBJECT_1, U,
};

#[test]
fn token_request_that_cannot_be_sent_is_503() {
    let host = FakeHost::default();
    host.dispatch_error.set(Some(DispatchError::UnknownCluster));
    let w = worker();
    let (_f, v) = request_from(&host, &w, 10, U);
    assert_eq!(v, Verdict::Pause);
    assert_eq!(host.stream(10).reply.unwrap().status, 503);
    assert_eq!(w.borrow().in_flight(), 0);
}

/// An answer from Envoy or the endpoint that is not Entra ID's.
fn plain(status: u16, body: &[u8]) -> CallAnswer {
    CallAnswer {
        status: Some(status),
        retry_after: None,
        overloaded: false,
        body: body.to_vec(),
    }
}

#[test]
fn every_failure_row_maps_to_its_status() {
    let cases: Vec<(CallAnswer, u32)> = vec![
        (
            fixture_answer(400, "error-invalid-grant-signature.json"),
            401,
        ),
        (fixture_answer(400, "error-interaction-required.json"), 401),
        (fixture_answer(429, "error-throttled.json"), 503),
        (fixture_answer(401, "error-invalid-client.json"), 502),
        (fixture_answer(400, "error-invalid-scope.json"), 502),
        (
            fixture_answer(503, "error-temporarily-unavailable.json"),
            503,
        ),
        (plain(500, b"oops"), 502),
        (plain(200, b"<html>"), 502),
        (plain(200, br#"{"expires_in":1}"#), 502),
        (plain(504, b"upstream request timeout"), 504),
        (plain(503, b"upstream connect error"), 503),
        (no_answer(), 503),
    ];
    for (i, (call_answer, status)) in cases.into_iter().enumerate() {
        let host = FakeHost::default();
        let w = worker();
        let (mut f, _) = request_from(&host, &w, 10, U);
        answer_every_try(&host, &w, &mut f, call_answer);
        let s = host.stream(10);
        assert!(!s.resumed, "case {i}");
        assert_eq!(s.reply.map(|r| r.status), Some(status), "case {i}");
    }
}

#[test]
fn throttled_answer_passes_retry_after_on() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(
        &host,
        &w,
        10,
        U,
        fixture_answer(429, "error-throttled.json"),
    );
    assert_eq!(
        host.stream(10).reply.unwrap().header("retry-after"),
        Some("60")
    );
}

#[test]
fn failed_exchange_is_not_cached() {
    let host = FakeHost::default();
    let w = worker();
    let invalid_client = fixture_answer(401, "error-invalid-client.json");
    request_answered(&host, &w, 10, U, invalid_client);
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
    assert_eq!(request_from(&host, &w, 11, U).1, Verdict::Pause);
    assert_eq!(host.token_requests(), 2);
}

#[test]
fn server_error_is_retried_once_from_the_root_then_refused() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request_from(&host, &w, 10, U);
    answer_every_try(&host, &w, &mut f, server_error());
    assert_eq!(host.token_requests(), 2, "one retry, no more");
    assert_eq!(host.dispatched.borrow()[1].from, ROOT);
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
}

#[test]
fn retry_that_succeeds_resumes_the_request() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, U, no_answer());
    assert!(host.stream(10).reply.is_none(), "waits for the retry");
    host.extra_ms.set(200);
    tick(&host, &w);
    let retry = host.dispatched.borrow()[1].clone();
    assert!(
        retry.timeout < std::time::Duration::from_millis(5000),
        "retry spends what is left of the budget"
    );
    answer_at_root(&host, &w, 1, ok_answer("obo-1", 3599.into()));
    assert!(host.stream(10).resumed);
    assert_authorization(&host, 10, "Bearer obo-1");
}

#[test]
fn client_errors_are_never_retried() {
    for a in [
        fixture_answer(400, "error-invalid-grant-expired.json"),
        fixture_answer(401, "error-invalid-client.json"),
        fixture_answer(429, "error-throttled.json"),
    ] {
        let host = FakeHost::default();
        let w = worker();
        request_answered(&host, &w, 10, U, a);
        assert_eq!(host.tick_period_ms.get(), 0);
        assert!(host.stream(10).reply.is_some());
    }
}

#[test]
fn no_retry_without_time_left_in_the_budget() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"token_timeout_ms": 100}));
    request_answered(&host, &w, 10, U, server_error());
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
    assert_eq!(host.token_requests(), 1);
}

#[test]
fn throttled_scope_fails_fast_with_retry_after_but_cached_tokens_are_served() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, ALICE, ok_answer("obo-alice", 3599.into()));
    request_answered(
        &host,
        &w,
        11,
        BOB,
        fixture_answer(429, "error-throttled.json"),
    );
    // Bob again, and another user: refused at once, no token request.
    for (id, who) in [(12, BOB), (13, SUBJECT_1)] {
        let (_f, v) = request_from(&host, &w, id, who);
        assert_eq!(v, Verdict::Pause);
        let reply = host.stream(id).reply.unwrap();
        assert_eq!(
            (reply.status, reply.header("retry-after")),
            (503, Some("60"))
        );
    }
    assert_eq!(host.token_requests(), 2);
    // Alice's cached token is still served.
    assert_eq!(request_from(&host, &w, 14, ALICE).1, Verdict::Continue);
    // Another scope is not affected.
    let bob = format!("Bearer {BOB}");
    let other_scope = request(
        &host,
        &w,
        15,
        "x.team.svc.cluster.local",
        "/v2/",
        Some(&bob),
    );
    assert_eq!(other_scope.1, Verdict::Pause);
    assert_eq!(host.token_requests(), 3);
    // Once the wait is over, the scope exchanges again.
    host.now.set(host.now.get() + 60);
    request_from(&host, &w, 16, BOB);
    assert_eq!(host.token_requests(), 4);
}

#[test]
fn invalid_grant_is_remembered_briefly_for_that_user_only() {
    let host = FakeHost::default();
    let w = worker();
    let expired = fixture_answer(400, "error-invalid-grant-expired.json");
    request_answered(&host, &w, 10, U, expired);
    let (_f, v) = request_from(&host, &w, 11, U);
    assert_eq!(v, Verdict::Pause);
    let reply = host.stream(11).reply.unwrap();
    assert_eq!(reply.status, 401);
    assert!(
        reply.body.contains("500133"),
        "the same answer as the first time: {}",
        reply.body
    );
    assert_eq!(host.token_requests(), 1);
    // Another user is not affected.
    request_from(&host, &w, 12, ALICE);
    assert_eq!(host.token_requests(), 2);
    // After negative_cache_s (5 s), the same token is tried again.
    host.now.set(host.now.get() + 5);
    request_from(&host, &w, 13, U);
    assert_eq!(host.token_requests(), 3);
}

/// Alice's and Bob's exchanges start together; Bob's times out after the whole budget, and
/// Alice's is answered `answer_alice` halfway, if at all. Then Carol, a new user, asks: her reply
/// (None: her token request was sent).
fn carol_after_bobs_timeout(answer_alice: Option<CallAnswer>) -> Option<u32> {
    let host = FakeHost::default();
    let w = worker();
    let (mut alice, _) = request_from(&host, &w, 10, ALICE);
    let (mut bob, _) = request_from(&host, &w, 11, BOB);
    host.extra_ms.set(2_500);
    if let Some(a) = answer_alice {
        answer(&host, &mut alice, 0, a);
    }
    host.extra_ms.set(5_000);
    answer(&host, &mut bob, 1, timed_out());
    assert_eq!(host.stream(11).reply.unwrap().status, 504);
    request_from(&host, &w, 12, U);
    host.stream(12).reply.map(|r| r.status)
}

#[test]
fn a_timeout_while_the_endpoint_answers_others_is_envoys_queue_and_starts_no_backoff() {
    assert_eq!(
        carol_after_bobs_timeout(Some(ok_answer("obo-alice", 3599.into()))),
        None
    );
    // An answer from the endpoint that refuses still shows it is there.
    let refused = fixture_answer(400, "error-invalid-grant-expired.json");
    assert_eq!(carol_after_bobs_timeout(Some(refused)), None);
    // With no answer since Bob's exchange began, the endpoint is taken to be struggling.
    assert_eq!(carol_after_bobs_timeout(None), Some(503));
    assert_eq!(carol_after_bobs_timeout(Some(timed_out())), Some(503));
}

#[test]
fn envoys_own_overflow_is_503_without_a_retry_or_a_backoff() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request_from(&host, &w, 10, ALICE);
    let overflow = CallAnswer {
        status: Some(503),
        retry_after: None,
        overloaded: true,
        body: b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
            .to_vec(),
    };
    answer_every_try(&host, &w, &mut f, overflow);
    let reply = host.stream(10).reply.unwrap();
    assert_eq!(
        (reply.status, reply.header("retry-after")),
        (503, Some("1"))
    );
    assert_eq!(host.token_requests(), 1, "not retried");
    assert_eq!(host.counted(Counter::ExchangesRefusedByEnvoy), 1);
    // The next user's exchange is sent at once: the scope does not back off.
    let _f = request_from(&host, &w, 11, BOB);
    assert!(host.stream(11).reply.is_none());
    assert_eq!(host.token_requests(), 2);
    // "no healthy upstream" is Envoy's answer too.
    let no_host = CallAnswer {
        status: Some(503),
        body: b"no healthy upstream".to_vec(),
        ..CallAnswer::default()
    };
    let mut f = RequestFilter::new(11, w.clone());
    answer_every_try(&host, &w, &mut f, no_host);
    assert_eq!(host.counted(Counter::ExchangesRefusedByEnvoy), 2);
    let _f = request_from(&host, &w, 12, U);
    assert!(host.stream(12).reply.is_none());
}
