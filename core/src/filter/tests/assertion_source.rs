//! A client assertion fetched through Envoy (`client_assertion_source`): fetched from the root
//! context, held and refreshed ahead of its `exp`, fetched again after `invalid_client`, and a
//! failed fetch refused with 503.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::{CallAnswer, Worker};
use crate::filter::Verdict;
use crate::metrics::Counter;
use crate::testing::{
    answer_at_root, assert_authorization, configured, fixture_answer, jwt_with_exp, ok_answer,
    request_from, tick, FakeHost, ALICE, U,
};

const NOW: u64 = 1_800_000_000;
const SOURCE_CLUSTER: &str = "federated_token";

fn fetching_worker(source: serde_json::Value) -> Rc<RefCell<Worker>> {
    configured(serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_assertion_source": source,
        "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}],
        "backoff": {"default_s": 7}
    }))
}

fn token_file_worker() -> Rc<RefCell<Worker>> {
    fetching_worker(serde_json::json!({"cluster": SOURCE_CLUSTER}))
}

fn served(body: &str) -> CallAnswer {
    CallAnswer {
        status: Some(200),
        body: body.as_bytes().to_vec(),
        ..Default::default()
    }
}

/// The number of the last callout the host was asked to send.
fn last_dispatched(host: &FakeHost) -> usize {
    host.dispatched.borrow().len() - 1
}

/// U's request, the assertion fetched with `assertion` as the file's content, and the token
/// request the root sends with it (not answered).
fn request_with_fetched(host: &FakeHost, w: &Rc<RefCell<Worker>>, assertion: &str) {
    let (_f, verdict) = request_from(host, w, 10, U);
    assert_eq!(verdict, Verdict::Pause);
    tick(host, w);
    answer_at_root(host, w, last_dispatched(host), served(assertion));
    tick(host, w);
}

#[test]
fn the_root_fetches_the_assertion_and_the_token_request_carries_it_instead_of_a_secret() {
    let host = FakeHost::default();
    let w = token_file_worker();
    let (_f, verdict) = request_from(&host, &w, 10, U);
    assert_eq!(verdict, Verdict::Pause);
    assert!(
        host.dispatched.borrow().is_empty(),
        "nothing sent before the root's tick"
    );
    tick(&host, &w);
    let fetch = host.dispatched.borrow()[0].clone();
    assert_eq!((fetch.cluster.as_str(), fetch.from), (SOURCE_CLUSTER, 1));
    assert_eq!(fetch.header(":method"), Some("GET"));
    assert_eq!(fetch.header(":path"), Some("/"));
    let assertion = jwt_with_exp(NOW + 3_600, "system:serviceaccount:team:app");
    answer_at_root(&host, &w, 0, served(&format!("{assertion}\n")));
    tick(&host, &w);
    let request = host.dispatched.borrow()[1].clone();
    assert_eq!(request.cluster, "entra_id");
    assert_eq!(request.field("client_assertion"), Some(assertion.as_str()));
    assert_eq!(
        request.field("client_assertion_type"),
        Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
    );
    assert_eq!(request.field("client_secret"), None);
    assert_eq!(request.field("assertion"), Some(U));
    answer_at_root(&host, &w, 1, ok_answer("obo-for-u", 3600.into()));
    assert_authorization(&host, 10, "Bearer obo-for-u");
    assert_eq!(host.counted(Counter::ClientAssertionFetches), 1);
}

#[test]
fn a_held_assertion_serves_the_next_users_token_request_without_a_fetch() {
    let host = FakeHost::default();
    let w = token_file_worker();
    let assertion = jwt_with_exp(NOW + 3_600, "workload");
    request_with_fetched(&host, &w, &assertion);
    let (_f, verdict) = request_from(&host, &w, 11, ALICE);
    assert_eq!(verdict, Verdict::Pause);
    let request = host.dispatched.borrow()[last_dispatched(&host)].clone();
    assert_eq!((request.cluster.as_str(), request.from), ("entra_id", 11));
    assert_eq!(request.field("client_assertion"), Some(assertion.as_str()));
    assert_eq!(host.counted(Counter::ClientAssertionFetches), 1);
}

#[test]
fn a_failed_fetch_is_503_with_retry_after_and_the_scope_backs_off() {
    for failed in [
        CallAnswer {
            status: Some(500),
            ..Default::default()
        },
        CallAnswer::default(),
        served("not a token"),
        served(&jwt_with_exp(NOW - 10, "expired")),
    ] {
        let host = FakeHost::default();
        let w = token_file_worker();
        let (_f, _) = request_from(&host, &w, 10, U);
        tick(&host, &w);
        answer_at_root(&host, &w, 0, failed);
        let reply = host.stream(10).reply.expect("refused");
        assert_eq!(reply.status, 503);
        assert_eq!(reply.header("retry-after"), Some("7"));
        assert!(!host.stream(10).resumed);
        assert_eq!(host.dispatched.borrow().len(), 1, "no token request");
        assert_eq!(host.counted(Counter::ClientAssertionFetchFailures), 1);
        // The next request within the backoff gets 503 at once, without another fetch.
        let (_g, verdict) = request_from(&host, &w, 11, ALICE);
        tick(&host, &w);
        assert_eq!(
            (verdict, host.stream(11).reply.unwrap().status),
            (Verdict::Pause, 503)
        );
        assert_eq!(host.dispatched.borrow().len(), 1);
    }
}

#[test]
fn an_assertion_too_near_its_exp_for_a_token_request_is_a_failed_fetch_not_fetched_again() {
    // 33 s left: past read_answer's 30 s margin, but not once a token request may take the
    // default token_timeout (5 s) to arrive. Held, it was never sent and fetched again at every
    // tick (hundreds of fetches a second) until it ran out.
    let host = FakeHost::default();
    let w = token_file_worker();
    let (_f, _) = request_from(&host, &w, 10, U);
    tick(&host, &w);
    answer_at_root(&host, &w, 0, served(&jwt_with_exp(NOW + 33, "near")));
    for _ in 0..3 {
        tick(&host, &w);
    }
    let reply = host.stream(10).reply.expect("refused");
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("7"));
    assert_eq!(host.dispatched.borrow().len(), 1, "fetched again");
    assert_eq!(host.counted(Counter::ClientAssertionFetchFailures), 1);
}

#[test]
fn invalid_client_fetches_a_new_assertion_once_before_failing() {
    let host = FakeHost::default();
    let w = token_file_worker();
    request_with_fetched(&host, &w, &jwt_with_exp(NOW + 3_600, "old"));
    let invalid_client = || fixture_answer(401, "error-invalid-client.json");
    answer_at_root(&host, &w, 1, invalid_client());
    assert!(host.stream(10).reply.is_none(), "not refused yet");
    tick(&host, &w);
    assert_eq!(host.dispatched.borrow()[2].cluster, SOURCE_CLUSTER);
    let rotated = jwt_with_exp(NOW + 3_600, "rotated");
    answer_at_root(&host, &w, 2, served(&rotated));
    tick(&host, &w);
    let retry = host.dispatched.borrow()[3].clone();
    assert_eq!(retry.field("client_assertion"), Some(rotated.as_str()));
    answer_at_root(&host, &w, 3, invalid_client());
    assert_eq!(
        host.stream(10)
            .reply
            .expect("refused after one retry")
            .status,
        502
    );
    assert_eq!(host.dispatched.borrow().len(), 4);
}

#[test]
fn the_assertion_is_fetched_again_ahead_of_its_exp_with_no_request_waiting() {
    let host = FakeHost::default();
    let w = token_file_worker();
    request_with_fetched(&host, &w, &jwt_with_exp(NOW + 3_600, "first"));
    answer_at_root(&host, &w, 1, ok_answer("obo-for-u", 3600.into()));
    host.now.set(NOW + 3_600 - 301);
    tick(&host, &w);
    assert_eq!(host.dispatched.borrow().len(), 2, "not yet");
    host.now.set(NOW + 3_600 - 300);
    tick(&host, &w);
    assert_eq!(host.dispatched.borrow()[2].cluster, SOURCE_CLUSTER);
    let next = jwt_with_exp(NOW + 7_200, "next");
    answer_at_root(&host, &w, 2, served(&next));
    let (_f, _) = request_from(&host, &w, 12, ALICE);
    let request = host.dispatched.borrow()[3].clone();
    assert_eq!(request.field("client_assertion"), Some(next.as_str()));
}

#[test]
fn a_failed_refresh_keeps_the_held_assertion_in_use() {
    let host = FakeHost::default();
    let w = token_file_worker();
    let assertion = jwt_with_exp(NOW + 3_600, "held");
    request_with_fetched(&host, &w, &assertion);
    host.now.set(NOW + 3_400);
    tick(&host, &w);
    answer_at_root(&host, &w, 2, CallAnswer::default());
    let (_f, verdict) = request_from(&host, &w, 12, ALICE);
    assert_eq!(verdict, Verdict::Pause);
    let request = host.dispatched.borrow()[3].clone();
    assert_eq!(request.field("client_assertion"), Some(assertion.as_str()));
    // The next refresh waits a while instead of fetching on every tick.
    tick(&host, &w);
    assert_eq!(host.dispatched.borrow().len(), 4);
}

#[test]
fn the_metadata_service_is_asked_with_its_header_for_the_exchange_audience() {
    let host = FakeHost::default();
    let w = fetching_worker(serde_json::json!({
        "cluster": "imds", "format": "imds", "client_id": "11111111-2222-3333-4444-555555555555"
    }));
    let (_f, _) = request_from(&host, &w, 10, U);
    tick(&host, &w);
    let fetch = host.dispatched.borrow()[0].clone();
    assert_eq!(fetch.header("metadata"), Some("true"));
    assert_eq!(fetch.header(":authority"), Some("169.254.169.254"));
    let path = fetch.header(":path").unwrap();
    assert!(path.starts_with("/metadata/identity/oauth2/token?api-version=2018-02-01"));
    assert!(path.contains("resource=api%3A%2F%2FAzureADTokenExchange"));
    assert!(path.ends_with("&client_id=11111111-2222-3333-4444-555555555555"));
    let assertion = jwt_with_exp(NOW + 86_400, "vm");
    let body = serde_json::json!({"access_token": assertion, "token_type": "Bearer"});
    answer_at_root(&host, &w, 0, served(&body.to_string()));
    tick(&host, &w);
    let request = host.dispatched.borrow()[1].clone();
    assert_eq!(request.field("client_assertion"), Some(assertion.as_str()));
}

#[test]
fn no_log_line_holds_the_assertion() {
    let host = FakeHost::default();
    let w = token_file_worker();
    let assertion = jwt_with_exp(NOW + 3_600, "secret-workload");
    request_with_fetched(&host, &w, &assertion);
    answer_at_root(
        &host,
        &w,
        1,
        fixture_answer(401, "error-invalid-client.json"),
    );
    tick(&host, &w);
    answer_at_root(&host, &w, 2, served("junk"));
    let logs = host.logs.borrow();
    assert!(!logs.is_empty());
    let payload = assertion.split('.').nth(1).unwrap();
    assert!(logs.iter().all(|(_, line)| !line.contains(payload)));
}

#[test]
fn an_assertion_that_expires_before_the_token_request_arrives_is_not_fetched_again_and_again() {
    let host = FakeHost::default();
    let w = token_file_worker();
    let (_f, _) = request_from(&host, &w, 10, U);
    // Valid for 33 s: past the use margin (30 s), but not for a request with 5 s of budget.
    let stale = jwt_with_exp(NOW + 33, "not-rotated");
    for _ in 0..20 {
        let sent_before = host.dispatched.borrow().len();
        tick(&host, &w);
        if host.dispatched.borrow().len() > sent_before {
            answer_at_root(&host, &w, sent_before, served(&stale));
        }
    }
    assert_eq!(
        host.counted(Counter::ClientAssertionFetches),
        1,
        "one fetch"
    );
    let reply = host.stream(10).reply.expect("refused, not left waiting");
    assert_eq!(reply.status, 503);
    assert!(host
        .dispatched
        .borrow()
        .iter()
        .all(|d| d.cluster == SOURCE_CLUSTER));
}
