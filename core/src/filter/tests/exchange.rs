//! The token request a matched request sends, the cache that serves the next ones, and one
//! exchange shared by every request that waits for the same token.

use crate::filter::Verdict;
use crate::metrics::Counter;
use crate::testing::{
    answer, answer_at_root, assert_authorization, assert_forwarded_with, fixture_answer,
    jwt_with_claims, jwt_with_exp, ok_answer, request, request_answered, request_from, tick,
    worker, worker_with, FakeHost, ALICE, BEARER_U, BOB, ROOT, SECRET, SUBJECT_1, U,
};

#[test]
fn matched_request_pauses_and_sends_the_documented_token_request() {
    let host = FakeHost::default();
    let w = worker();
    let (_f, verdict) = request(
        &host,
        &w,
        10,
        "api.example.com",
        "/x",
        Some(&format!("Bearer {SUBJECT_1}")),
    );
    assert_eq!(verdict, Verdict::Pause);
    let d = host.dispatched.borrow()[0].clone();
    assert_eq!(d.cluster, "entra_id");
    assert_eq!(
        d.field("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    );
    assert_eq!(d.field("requested_token_use"), Some("on_behalf_of"));
    assert_eq!(d.field("assertion"), Some(SUBJECT_1));
    assert_eq!(d.field("client_id"), Some("client-1"));
    assert_eq!(d.field("client_secret"), Some(SECRET));
    assert_eq!(d.field("scope"), Some("api://prod.team.api/.default"));
    assert!(d
        .headers
        .contains(&(":authority".into(), "login.example".into())));
    assert!(d
        .headers
        .contains(&(":path".into(), "/tenant/oauth2/v2.0/token".into())));
    assert_eq!(d.timeout, std::time::Duration::from_millis(5000));
}

#[test]
fn issued_token_replaces_authorization_and_resumes() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(
        &host,
        &w,
        10,
        "api.example.com",
        "/x",
        Some(&format!("Bearer {SUBJECT_1}")),
    );
    answer(&host, &mut f, 0, ok_answer("obo-1", 3599.into()));
    let s = host.stream(10);
    assert!(s.resumed && s.reply.is_none());
    assert_authorization(&host, 10, "Bearer obo-1");
}

#[test]
fn second_request_is_served_from_the_cache_without_a_token_request() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, SUBJECT_1, ok_answer("obo-1", "3599".into()));
    let (_f2, verdict) = request(
        &host,
        &w,
        11,
        "API.example.com",
        "/y",
        Some(&format!("bearer {SUBJECT_1}")),
    );
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 11, "Bearer obo-1");
    assert_eq!(host.token_requests(), 1);
}

#[test]
fn cache_is_per_user_and_per_scope() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, ALICE, ok_answer("obo-alice", 3599.into()));
    let (_f, v) = request_from(&host, &w, 11, BOB);
    assert_eq!(v, Verdict::Pause);
    let (_f, v) = request(
        &host,
        &w,
        12,
        "x.team.svc.cluster.local",
        "/v2/a",
        Some(&format!("Bearer {ALICE}")),
    );
    assert_eq!(v, Verdict::Pause);
    assert_eq!(host.token_requests(), 3);
    assert_eq!(
        host.dispatched.borrow()[2].field("scope"),
        Some("api://prod.team.other/.default")
    );
}

#[test]
fn cached_token_expires_at_expires_in_minus_skew() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, U, ok_answer("obo-1", 160.into()));
    host.now.set(host.now.get() + 99);
    assert_eq!(request_from(&host, &w, 11, U).1, Verdict::Continue);
    host.now.set(host.now.get() + 1);
    assert_eq!(request_from(&host, &w, 12, U).1, Verdict::Pause);
}

#[test]
fn cached_token_is_never_used_past_the_subject_tokens_exp() {
    let host = FakeHost::default();
    let w = worker();
    let subject = jwt_with_exp(host.now.get() + 30, "alice");
    request_answered(&host, &w, 10, &subject, ok_answer("obo-1", 3599.into()));
    host.now.set(host.now.get() + 29);
    assert_eq!(request_from(&host, &w, 11, &subject).1, Verdict::Continue);
    host.now.set(host.now.get() + 1);
    assert_eq!(request_from(&host, &w, 12, &subject).1, Verdict::Pause);
}

#[test]
fn a_user_whose_requests_come_minutes_apart_is_served_without_reading_shared_data() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, U, ok_answer("obo-1", 3599.into()));
    // The first hit on this worker takes the token from the shared cache into the worker's own.
    request_from(&host, &w, 11, U);
    host.now.set(host.now.get() + 20 * 60);
    host.shared_reads.borrow_mut().clear();
    assert_forwarded_with(&host, &w, 12, U, "Bearer obo-1");
    let reads = host.shared_reads.borrow();
    assert!(
        reads.iter().all(|k| *k == crate::shared_data::DROPPED),
        "only the once-a-second look for dropped tokens: {reads:?}"
    );
}

#[test]
fn concurrent_requests_for_one_key_share_one_token_request() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request_from(&host, &w, 10, U);
    let _others: Vec<_> = (11..15).map(|id| request_from(&host, &w, id, U)).collect();
    assert_eq!(host.token_requests(), 1);
    answer(&host, &mut first, 0, ok_answer("obo-1", 3599.into()));
    for id in 10..15 {
        assert!(host.stream(id).resumed, "stream {id}");
        assert_authorization(&host, id, "Bearer obo-1");
    }
    assert_eq!(host.current(), 10, "host is back on the answering stream");
    assert_eq!(w.borrow().in_flight(), 0);
}

#[test]
fn failed_exchange_refuses_every_waiting_request() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request_from(&host, &w, 10, U);
    let _second = request_from(&host, &w, 11, U);
    let expired = fixture_answer(400, "error-invalid-grant-expired.json");
    answer(&host, &mut first, 0, expired);
    for id in [10, 11] {
        let s = host.stream(id);
        assert!(!s.resumed);
        assert_eq!(s.reply.unwrap().status, 401);
        assert_eq!(
            host.header_of(id, "authorization").as_deref(),
            Some(BEARER_U),
            "header untouched, never forwarded"
        );
    }
}

#[test]
fn waiter_that_goes_away_is_not_touched() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request_from(&host, &w, 10, U);
    let (mut second, _) = request_from(&host, &w, 11, U);
    host.close_stream(11);
    second.on_end(&host);
    answer(&host, &mut first, 0, ok_answer("obo-1", 3599.into()));
    assert!(host.stream(10).resumed);
    assert!(!host.stream(11).resumed);
}

#[test]
fn exchange_is_re_sent_by_the_root_when_its_sender_goes_away() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request_from(&host, &w, 10, U);
    let _second = request_from(&host, &w, 11, U);
    host.close_stream(10);
    host.enter(10);
    first.on_end(&host);
    assert_eq!(host.tick_period_ms.get(), 1);
    assert_eq!(tick(&host, &w), 0);
    let resent = host.dispatched.borrow()[1].clone();
    assert_eq!(resent.from, ROOT);
    assert_eq!(resent.field("assertion"), Some(U));
    answer_at_root(&host, &w, 1, ok_answer("obo-1", 3599.into()));
    assert!(host.stream(11).resumed);
    assert_authorization(&host, 11, "Bearer obo-1");
    assert_eq!(host.current(), ROOT);
}

#[test]
fn sender_that_goes_away_alone_leaves_nothing_in_flight() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request_from(&host, &w, 10, U);
    first.on_end(&host);
    assert_eq!(host.tick_period_ms.get(), 0);
    assert_eq!(w.borrow().in_flight(), 0);
}

#[test]
fn past_the_exchange_limit_a_new_user_is_503_at_once_and_the_others_go_on() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"max_exchanges_in_flight_per_worker": 2}));
    let users: Vec<String> = (0..3)
        .map(|n| jwt_with_claims(&host, &format!(r#""sub":"user-{n}""#)))
        .collect();
    let (mut first, _) = request_from(&host, &w, 10, &users[0]);
    let (_second, _) = request_from(&host, &w, 11, &users[1]);
    // The first user's second request joins the exchange in flight: no new one.
    let (_joined, v) = request_from(&host, &w, 12, &users[0]);
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(12).reply.is_none());
    let (_third, v) = request_from(&host, &w, 13, &users[2]);
    assert_eq!(v, Verdict::Pause);
    let reply = host.stream(13).reply.unwrap();
    assert_eq!(
        (reply.status, reply.header("retry-after")),
        (503, Some("1"))
    );
    assert_eq!(host.token_requests(), 2);
    assert_eq!(host.counted(Counter::OverExchangeLimit), 1);
    // Once one exchange is over, there is room again; the cached user is served meanwhile.
    answer(&host, &mut first, 0, ok_answer("obo-0", 3599.into()));
    assert_forwarded_with(&host, &w, 14, &users[0], "Bearer obo-0");
    let (_third, v) = request_from(&host, &w, 15, &users[2]);
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(15).reply.is_none());
    assert_eq!(host.token_requests(), 3);
}
