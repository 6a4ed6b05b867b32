//! Delegation (RFC 8693 `actor`): the actor provider's client-credentials token goes with every
//! delegated exchange as `actor_token`; it is fetched once, shared, and bounds what it helped make.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::Worker;
use crate::filter::Verdict;
use crate::metrics::Counter;
use crate::testing::{
    answer_at_root, assert_authorization, configured, fixture_answer, ok_answer, request_from,
    tick, FakeHost, ALICE, BOB, SECRET,
};

const ACTOR_SCOPE: &str = "api://sts.example/.default";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

fn delegating(actor: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "token_cluster": "sts",
        "token_endpoint": "https://sts.example/token",
        "client_id": "agent-app",
        "client_secret": SECRET,
        "grant": "token_exchange",
        "actor": actor,
        "providers": {
            "agent": {
                "token_cluster": "entra_id",
                "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
                "client_id": "agent-identity",
                "client_secret": SECRET,
                "grant": "client_credentials"
            }
        },
        "targets": [{"host": "api.example.com", "audience": "api://downstream"}]
    })
}

fn delegating_worker() -> Rc<RefCell<Worker>> {
    configured(delegating(
        serde_json::json!({"provider": "agent", "scope": ACTOR_SCOPE}),
    ))
}

/// Runs the root's tick; the token request it sent, if one.
fn tick_sends(host: &FakeHost, w: &Rc<RefCell<Worker>>) -> Option<usize> {
    let before = host.token_requests();
    tick(host, w);
    (host.token_requests() > before).then_some(before)
}

#[test]
fn the_actors_token_is_fetched_first_then_sent_as_actor_token() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let (_f, verdict) = request_from(&host, &w, 10, ALICE);
    assert_eq!(verdict, Verdict::Pause);
    let actor_request = tick_sends(&host, &w).expect("the actor's token is asked for");
    let sent = host.dispatched.borrow()[actor_request].clone();
    assert_eq!(sent.cluster, "entra_id");
    assert_eq!(sent.field("grant_type"), Some("client_credentials"));
    assert_eq!(sent.field("client_id"), Some("agent-identity"));
    assert_eq!(sent.field("scope"), Some(ACTOR_SCOPE));
    assert_eq!(sent.field("subject_token"), None);
    answer_at_root(&host, &w, actor_request, ok_answer("actor-1", 3600.into()));

    let exchange = tick_sends(&host, &w).expect("then the delegated exchange");
    let sent = host.dispatched.borrow()[exchange].clone();
    assert_eq!(sent.cluster, "sts");
    assert_eq!(
        sent.field("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(sent.field("subject_token"), Some(ALICE));
    assert_eq!(sent.field("actor_token"), Some("actor-1"));
    assert_eq!(sent.field("actor_token_type"), Some(ACCESS_TOKEN_TYPE));
    assert_eq!(sent.field("audience"), Some("api://downstream"));
    answer_at_root(
        &host,
        &w,
        exchange,
        ok_answer("delegated-alice", 3600.into()),
    );
    assert_authorization(&host, 10, "Bearer delegated-alice");
    assert!(host.stream(10).resumed);
}

#[test]
fn the_actor_token_type_is_the_configured_one() {
    let host = FakeHost::default();
    let w = configured(delegating(serde_json::json!({
        "provider": "agent", "scope": ACTOR_SCOPE,
        "token_type": "urn:ietf:params:oauth:token-type:jwt"
    })));
    let _r = request_from(&host, &w, 10, ALICE);
    let actor_request = tick_sends(&host, &w).unwrap();
    answer_at_root(&host, &w, actor_request, ok_answer("actor-1", 3600.into()));
    let exchange = tick_sends(&host, &w).unwrap();
    assert_eq!(
        host.dispatched.borrow()[exchange].field("actor_token_type"),
        Some("urn:ietf:params:oauth:token-type:jwt")
    );
}

#[test]
fn one_actor_token_serves_every_user_until_it_ends() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let (_a, _) = request_from(&host, &w, 10, ALICE);
    let (_b, _) = request_from(&host, &w, 11, BOB);
    let actor_request = tick_sends(&host, &w).unwrap();
    assert_eq!(
        host.token_requests(),
        1,
        "one actor token for both waiting users"
    );
    answer_at_root(&host, &w, actor_request, ok_answer("actor-1", 3600.into()));
    tick(&host, &w);
    let sent: Vec<_> = host.dispatched.borrow()[1..]
        .iter()
        .map(|d| {
            (
                d.field("subject_token").map(str::to_string),
                d.field("actor_token").map(str::to_string),
            )
        })
        .collect();
    assert_eq!(sent.len(), 2);
    assert!(sent
        .iter()
        .all(|(_, actor)| actor.as_deref() == Some("actor-1")));

    // A later user's exchange goes out at once, with the cached actor token.
    let carol = crate::testing::jwt_with_exp(1_800_003_600, "carol");
    let (_c, verdict) = request_from(&host, &w, 12, &carol);
    assert_eq!(verdict, Verdict::Pause);
    let last = host.dispatched.borrow().last().cloned().unwrap();
    assert_eq!(last.field("subject_token"), Some(carol.as_str()));
    assert_eq!(last.field("actor_token"), Some("actor-1"));
    assert_eq!(host.token_requests(), 4);
}

#[test]
fn a_new_actor_token_makes_a_new_delegated_token() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let (_f, _) = request_from(&host, &w, 10, ALICE);
    let actor_request = tick_sends(&host, &w).unwrap();
    // Used for 600 - 60 (the expiry skew) seconds.
    answer_at_root(&host, &w, actor_request, ok_answer("actor-1", 600.into()));
    let exchange = tick_sends(&host, &w).unwrap();
    answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));
    assert_authorization(&host, 10, "Bearer delegated-1");

    host.now.set(host.now.get() + 300);
    let (_g, verdict) = request_from(&host, &w, 11, ALICE);
    assert_eq!(
        verdict,
        Verdict::Continue,
        "cached while the actor token lasts"
    );
    assert_authorization(&host, 11, "Bearer delegated-1");

    // The delegated token lasted no longer than the actor token it was made with.
    host.now.set(host.now.get() + 241);
    let (_h, verdict) = request_from(&host, &w, 12, ALICE);
    assert_eq!(verdict, Verdict::Pause);
    let actor_request = tick_sends(&host, &w).expect("a new actor token");
    assert_eq!(
        host.dispatched.borrow()[actor_request].field("grant_type"),
        Some("client_credentials")
    );
    answer_at_root(&host, &w, actor_request, ok_answer("actor-2", 600.into()));
    let exchange = tick_sends(&host, &w).unwrap();
    assert_eq!(
        host.dispatched.borrow()[exchange].field("actor_token"),
        Some("actor-2")
    );
    answer_at_root(&host, &w, exchange, ok_answer("delegated-2", 3600.into()));
    assert_authorization(&host, 12, "Bearer delegated-2");
}

#[test]
fn when_the_actors_token_is_refused_the_waiting_requests_get_that_refusals_status() {
    for (answer, status) in [
        (fixture_answer(401, "error-invalid-client.json"), 502),
        (fixture_answer(400, "error-invalid-scope.json"), 502),
        (fixture_answer(429, "error-throttled.json"), 503),
    ] {
        let host = FakeHost::default();
        let w = delegating_worker();
        let (_a, _) = request_from(&host, &w, 10, ALICE);
        let (_b, _) = request_from(&host, &w, 11, BOB);
        let actor_request = tick_sends(&host, &w).unwrap();
        answer_at_root(&host, &w, actor_request, answer);
        tick(&host, &w);
        for id in [10, 11] {
            let reply = host.stream(id).reply.expect("refused");
            assert_eq!(reply.status, status);
            assert!(!host.stream(id).resumed);
        }
        assert_eq!(
            host.token_requests(),
            1,
            "no exchange without an actor token"
        );
        assert_eq!(host.counted(Counter::FailedExchange), 2);
        assert_eq!(w.borrow().in_flight(), 0);
    }
}

#[test]
fn while_the_actors_scope_backs_off_delegated_requests_are_refused_without_a_token_request() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let (_a, _) = request_from(&host, &w, 10, ALICE);
    let actor_request = tick_sends(&host, &w).unwrap();
    answer_at_root(
        &host,
        &w,
        actor_request,
        fixture_answer(429, "error-throttled.json"),
    );
    let (_b, verdict) = request_from(&host, &w, 11, BOB);
    assert_eq!(verdict, Verdict::Pause);
    let reply = host.stream(11).reply.expect("refused at once");
    assert_eq!(reply.status, 503);
    assert!(reply.header("retry-after").is_some());
    tick(&host, &w);
    assert_eq!(host.token_requests(), 1);
}

#[test]
fn the_actor_token_outlives_a_caller_who_left() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let (mut gone, _) = request_from(&host, &w, 10, ALICE);
    host.close_stream(10);
    gone.on_end(&host);
    let actor_request = tick_sends(&host, &w).expect("still asked for");
    answer_at_root(&host, &w, actor_request, ok_answer("actor-1", 3600.into()));
    tick(&host, &w);
    assert_eq!(
        host.token_requests(),
        1,
        "no exchange for a caller who left"
    );
    let (_b, _) = request_from(&host, &w, 11, BOB);
    let last = host.dispatched.borrow().last().cloned().unwrap();
    assert_eq!(last.field("actor_token"), Some("actor-1"));
    assert_eq!(host.token_requests(), 2);
}

#[test]
fn another_worker_waits_for_the_actor_token_in_flight_instead_of_asking_again() {
    let host = FakeHost::default();
    let (first, second) = (delegating_worker(), delegating_worker());
    let (_a, _) = request_from(&host, &first, 10, ALICE);
    let actor_request = tick_sends(&host, &first).unwrap();
    let (_b, _) = request_from(&host, &second, 20, BOB);
    tick(&host, &second);
    assert_eq!(
        host.token_requests(),
        1,
        "the second worker waits on the first's lease"
    );
    answer_at_root(
        &host,
        &first,
        actor_request,
        ok_answer("actor-1", 3600.into()),
    );
    host.extra_ms.set(host.extra_ms.get() + 20);
    tick(&host, &second);
    tick(&host, &second);
    let bobs = host
        .dispatched
        .borrow()
        .iter()
        .find(|d| d.field("subject_token") == Some(BOB))
        .cloned()
        .expect("bob's exchange is sent");
    assert_eq!(bobs.field("actor_token"), Some("actor-1"));
    let actor_requests = host
        .dispatched
        .borrow()
        .iter()
        .filter(|d| d.field("grant_type") == Some("client_credentials"))
        .count();
    assert_eq!(actor_requests, 1);
}

#[test]
fn the_cache_key_covers_the_actor_and_keys_without_one_are_unchanged() {
    let cfg = |scope: &str| {
        let json = delegating(serde_json::json!({"provider": "agent", "scope": scope}));
        crate::config::parse(json.to_string().as_bytes(), &|_| None).unwrap()
    };
    let (a, b) = (cfg(ACTOR_SCOPE), cfg("api://other/.default"));
    assert_ne!(a.providers[0].key_client(), b.providers[0].key_client());
    assert_eq!(a.providers[1].key_client(), "agent-identity");
}

#[test]
fn a_delegated_token_is_refreshed_with_a_fresh_actor_token_never_one_near_its_end() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let (_f, _) = request_from(&host, &w, 10, ALICE);
    let actor_request = tick_sends(&host, &w).unwrap();
    answer_at_root(&host, &w, actor_request, ok_answer("actor-1", 3600.into()));
    let exchange = tick_sends(&host, &w).unwrap();
    answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));

    // Both are due for their refresh (300 s before their end): the actor's comes first.
    host.now.set(host.now.get() + 3250);
    let (_g, verdict) = request_from(&host, &w, 11, ALICE);
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 11, "Bearer delegated-1");
    let refresh = tick_sends(&host, &w).expect("the actor token is refreshed");
    assert_eq!(
        host.dispatched.borrow()[refresh].field("grant_type"),
        Some("client_credentials")
    );
    assert_eq!(
        tick_sends(&host, &w),
        None,
        "no delegated refresh with actor-1"
    );
    answer_at_root(&host, &w, refresh, ok_answer("actor-2", 3600.into()));

    let (_h, verdict) = request_from(&host, &w, 12, ALICE);
    assert_eq!(verdict, Verdict::Continue);
    let refresh = tick_sends(&host, &w).expect("now the delegated token is refreshed");
    assert_eq!(
        host.dispatched.borrow()[refresh].field("actor_token"),
        Some("actor-2")
    );
    answer_at_root(&host, &w, refresh, ok_answer("delegated-2", 3600.into()));
    let (_i, _) = request_from(&host, &w, 13, ALICE);
    assert_authorization(&host, 13, "Bearer delegated-2");
}
