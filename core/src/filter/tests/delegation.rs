//! Delegation (RFC 8693 `actor`): the actor provider's client-credentials token goes with every
//! delegated exchange as `actor_token`; it is fetched once, shared, and bounds what it helped make.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::{CallAnswer, Worker};
use crate::filter::Verdict;
use crate::metrics::Counter;
use crate::testing::{
    answer_at_root, assert_authorization, configured, fixture_answer, jwt_with_exp, ok_answer,
    request_from, tick, FakeHost, ALICE, BOB, SECRET,
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
    delegating_with(serde_json::json!({}))
}

/// Runs the root's tick; the token request it sent, if one.
fn tick_sends(host: &FakeHost, w: &Rc<RefCell<Worker>>) -> Option<usize> {
    let before = host.token_requests();
    tick(host, w);
    (host.token_requests() > before).then_some(before)
}

/// Field `name` of the token request numbered `nth` ("" when it has none).
fn field_of(host: &FakeHost, nth: usize, name: &str) -> String {
    host.dispatched.borrow()[nth]
        .field(name)
        .unwrap_or_default()
        .to_string()
}

/// Alice's request 10 on `w`, the actor's token answered `actor`, and her exchange then sent:
/// its number.
fn alice_sent_with(host: &FakeHost, w: &Rc<RefCell<Worker>>, actor: CallAnswer) -> usize {
    request_from(host, w, 10, ALICE);
    let actor_request = tick_sends(host, w).expect("the actor's token is asked for");
    answer_at_root(host, w, actor_request, actor);
    tick_sends(host, w).expect("then alice's exchange")
}

/// The delegating configuration with the fields of `extra` added or replaced (the actor's
/// provider, `agent`, keeps its own unless `extra` names `providers`).
fn delegating_with(extra: serde_json::Value) -> Rc<RefCell<Worker>> {
    let mut json = delegating(serde_json::json!({"provider": "agent", "scope": ACTOR_SCOPE}));
    if let (Some(base), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    configured(json)
}

/// Every token request sent with this `grant_type`.
fn sent_with_grant(host: &FakeHost, grant_type: &str) -> usize {
    host.dispatched
        .borrow()
        .iter()
        .filter(|d| d.field("grant_type") == Some(grant_type))
        .count()
}

const TOKEN_EXCHANGE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";

/// No log line carries `token`.
fn assert_not_logged(host: &FakeHost, token: &str) {
    let logs = host.logs.borrow();
    let carrying: Vec<_> = logs.iter().filter(|(_, l)| l.contains(token)).collect();
    assert!(carrying.is_empty(), "{carrying:?}");
}

/// The delegating worker, with a `client_credentials` target of the actor's provider and scope.
fn with_actors_own_target() -> Rc<RefCell<Worker>> {
    delegating_with(serde_json::json!({"targets": [
        {"host": "api.example.com", "audience": "api://downstream"},
        {"host": "sts-admin.example.com", "provider": "agent", "scope": ACTOR_SCOPE}
    ]}))
}

fn to_actors_own_target(host: &FakeHost, w: &Rc<RefCell<Worker>>, id: u32) -> Verdict {
    let (_f, verdict) = crate::testing::request(host, w, id, "sts-admin.example.com", "/", None);
    verdict
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
    let exchange = alice_sent_with(&host, &w, ok_answer("actor-1", 3600.into()));
    assert_eq!(
        field_of(&host, exchange, "actor_token_type"),
        "urn:ietf:params:oauth:token-type:jwt"
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
    let carol = jwt_with_exp(1_800_003_600, "carol");
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
    // Used for 600 - 60 (the expiry skew) seconds.
    let exchange = alice_sent_with(&host, &w, ok_answer("actor-1", 600.into()));
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
        field_of(&host, actor_request, "grant_type"),
        "client_credentials"
    );
    answer_at_root(&host, &w, actor_request, ok_answer("actor-2", 600.into()));
    let exchange = tick_sends(&host, &w).unwrap();
    assert_eq!(field_of(&host, exchange, "actor_token"), "actor-2");
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
    let exchange = alice_sent_with(&host, &w, ok_answer("actor-1", 3600.into()));
    answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));

    // Both are due for their refresh (300 s before their end): the actor's comes first.
    host.now.set(host.now.get() + 3250);
    let (_g, verdict) = request_from(&host, &w, 11, ALICE);
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 11, "Bearer delegated-1");
    let refresh = tick_sends(&host, &w).expect("the actor token is refreshed");
    assert_eq!(field_of(&host, refresh, "grant_type"), "client_credentials");
    assert_eq!(
        tick_sends(&host, &w),
        None,
        "no delegated refresh with actor-1"
    );
    answer_at_root(&host, &w, refresh, ok_answer("actor-2", 3600.into()));

    let (_h, verdict) = request_from(&host, &w, 12, ALICE);
    assert_eq!(verdict, Verdict::Continue);
    let refresh = tick_sends(&host, &w).expect("now the delegated token is refreshed");
    assert_eq!(field_of(&host, refresh, "actor_token"), "actor-2");
    answer_at_root(&host, &w, refresh, ok_answer("delegated-2", 3600.into()));
    let (_i, _) = request_from(&host, &w, 13, ALICE);
    assert_authorization(&host, 13, "Bearer delegated-2");
}

#[test]
fn another_worker_waits_for_a_delegated_exchange_sent_late_after_its_actors_token() {
    // When (ms) alice asks on worker b, when the actor's token comes to worker a, and when b
    // looks again: past the one time budget a lease covers, or a wait lasts, without an actor.
    for (b_asks, actor_answers, b_looks) in [(6_000, 4_900, 6_000), (100, 4_000, 7_000)] {
        let host = FakeHost::default();
        let (a, b) = (delegating_worker(), delegating_worker());
        request_from(&host, &a, 10, ALICE);
        let actor_request = tick_sends(&host, &a).unwrap();
        if b_asks < actor_answers {
            host.extra_ms.set(b_asks);
            request_from(&host, &b, 20, ALICE);
        }
        host.extra_ms.set(actor_answers);
        answer_at_root(&host, &a, actor_request, ok_answer("actor-1", 3600.into()));
        let exchange = tick_sends(&host, &a).expect("alice's exchange, from worker a");
        host.extra_ms.set(b_looks);
        if b_asks >= actor_answers {
            request_from(&host, &b, 20, ALICE);
        }
        tick(&host, &b);
        assert_eq!(
            sent_with_grant(&host, TOKEN_EXCHANGE),
            1,
            "worker b waits for a's exchange of the same key"
        );
        answer_at_root(&host, &a, exchange, ok_answer("delegated-1", 3600.into()));
        tick(&host, &b);
        assert_authorization(&host, 20, "Bearer delegated-1");
        assert_eq!(host.token_requests(), 2);
    }
}

#[test]
fn a_caller_who_leaves_while_waiting_for_the_actor_lets_another_worker_exchange_at_once() {
    let host = FakeHost::default();
    let (a, b) = (delegating_worker(), delegating_worker());
    let (mut gone, _) = request_from(&host, &a, 10, ALICE);
    host.close_stream(10);
    gone.on_end(&host);
    let actor_request = tick_sends(&host, &a).unwrap();
    answer_at_root(&host, &a, actor_request, ok_answer("actor-1", 3600.into()));
    tick(&host, &a);
    // Alice again, on worker b: nothing is under way for her any more.
    let (_fb, _) = request_from(&host, &b, 20, ALICE);
    let last = host.dispatched.borrow().last().cloned().unwrap();
    assert_eq!(last.field("subject_token"), Some(ALICE), "sent at once");
    assert_eq!(last.field("actor_token"), Some("actor-1"));
}

#[test]
fn callers_who_leave_while_waiting_for_the_actor_are_not_kept_on_its_exchange() {
    let host = FakeHost::default();
    let w = delegating_worker();
    for id in 10..60 {
        let user = jwt_with_exp(1_800_003_600, &format!("user-{id}"));
        let (mut gone, _) = request_from(&host, &w, id, &user);
        host.close_stream(id);
        gone.on_end(&host);
    }
    assert_eq!(w.borrow().in_flight(), 1, "the actor's exchange alone");
    assert_eq!(w.borrow().dependents_listed(), 0);
}

#[test]
fn the_actors_exchange_counts_toward_the_exchange_limit() {
    let host = FakeHost::default();
    let w = delegating_with(serde_json::json!({"max_exchanges_in_flight_per_worker": 1}));
    let (_a, _) = request_from(&host, &w, 10, ALICE);
    assert!(w.borrow().in_flight() <= 1, "{}", w.borrow().in_flight());
    assert_eq!(host.stream(10).reply.map(|r| r.status), Some(503));
    let w = delegating_with(serde_json::json!({"max_exchanges_in_flight_per_worker": 2}));
    let (_b, _) = request_from(&host, &w, 11, BOB);
    assert_eq!(w.borrow().in_flight(), 2);
    assert!(host.stream(11).reply.is_none());
}

#[test]
fn a_delegated_exchange_whose_lease_ran_out_while_its_actor_was_late_waits_for_the_new_holder() {
    let host = FakeHost::default();
    let (a, b, dead) = (
        delegating_worker(),
        delegating_worker(),
        delegating_worker(),
    );
    // A worker leases the actor's token, asks for it, and dies.
    let (_fd, _) = request_from(&host, &dead, 30, BOB);
    tick_sends(&host, &dead).unwrap();
    let (_fa, _) = request_from(&host, &a, 10, ALICE);
    tick(&host, &a);
    // Worker a takes the actor's exchange over once that lease ends; its answer comes late.
    host.extra_ms.set(5_600);
    let actor_request = tick_sends(&host, &a).expect("a asks for the actor's token itself");
    // Meanwhile alice's lease on worker a ran out (two budgets and the margin), and b took it.
    host.extra_ms.set(10_600);
    let (_fb, _) = request_from(&host, &b, 20, ALICE);
    tick(&host, &b);
    answer_at_root(&host, &a, actor_request, ok_answer("actor-1", 3600.into()));
    for w in [&a, &b, &a, &b] {
        tick(&host, w);
    }
    let exchanges: Vec<_> = host
        .dispatched
        .borrow()
        .iter()
        .filter(|d| d.field("subject_token") == Some(ALICE))
        .cloned()
        .collect();
    assert_eq!(exchanges.len(), 1, "one exchange for alice, from b");
    let token_id = exchanges[0].token_id;
    b.borrow_mut()
        .complete(&host, token_id, &ok_answer("delegated-1", 3600.into()), 1);
    host.extra_ms.set(10_700);
    tick(&host, &a);
    assert_authorization(&host, 10, "Bearer delegated-1");
    assert_authorization(&host, 20, "Bearer delegated-1");
}

#[test]
fn a_client_credentials_target_of_the_actors_scope_shares_its_token_which_no_user_gets() {
    for target_first in [false, true] {
        let host = FakeHost::default();
        let w = with_actors_own_target();
        if target_first {
            assert_eq!(to_actors_own_target(&host, &w, 11), Verdict::Pause);
        }
        let (_a, _) = request_from(&host, &w, 10, ALICE);
        if !target_first {
            assert_eq!(to_actors_own_target(&host, &w, 11), Verdict::Pause);
        }
        tick(&host, &w);
        assert_eq!(host.token_requests(), 1, "one request for the actor's key");
        answer_at_root(&host, &w, 0, ok_answer("actor-1", 3600.into()));
        assert_authorization(&host, 11, "Bearer actor-1");
        let exchange = tick_sends(&host, &w).expect("alice's exchange");
        assert_eq!(field_of(&host, exchange, "actor_token"), "actor-1");
        assert_eq!(
            host.header_of(10, "authorization"),
            Some(format!("Bearer {ALICE}"))
        );
        answer_at_root(
            &host,
            &w,
            exchange,
            ok_answer("delegated-alice", 3600.into()),
        );
        assert_authorization(&host, 10, "Bearer delegated-alice");
        crate::testing::assert_forwarded_with(&host, &w, 12, ALICE, "Bearer delegated-alice");
        assert_eq!(to_actors_own_target(&host, &w, 13), Verdict::Continue);
        assert_authorization(&host, 13, "Bearer actor-1");
        assert_eq!(host.token_requests(), 2);
        assert_not_logged(&host, "actor-1");
    }
}

#[test]
fn an_actor_token_too_short_lived_to_cache_is_still_sent_and_its_delegated_token_used_once() {
    let host = FakeHost::default();
    let w = delegating_worker();
    // Less than the expiry skew (60 s): not cached.
    let exchange = alice_sent_with(&host, &w, ok_answer("actor-1", 30.into()));
    assert_eq!(field_of(&host, exchange, "actor_token"), "actor-1");
    answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));
    assert_authorization(&host, 10, "Bearer delegated-1");
    assert_eq!(w.borrow().in_flight(), 0);
    // No longer than the actor token it was made with: the next request asks again.
    let (_g, verdict) = request_from(&host, &w, 11, ALICE);
    assert_eq!(verdict, Verdict::Pause);
    let again = tick_sends(&host, &w).expect("a new actor token");
    assert_eq!(field_of(&host, again, "grant_type"), "client_credentials");
}

#[test]
fn a_retried_actor_exchange_then_sends_the_waiting_exchanges() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let (_f, _) = request_from(&host, &w, 10, ALICE);
    let first = tick_sends(&host, &w).unwrap();
    answer_at_root(&host, &w, first, crate::testing::server_error());
    host.extra_ms.set(200);
    let retry = tick_sends(&host, &w).expect("the actor's exchange is retried");
    assert_eq!(field_of(&host, retry, "grant_type"), "client_credentials");
    assert!(host.stream(10).reply.is_none(), "alice still waits");
    answer_at_root(&host, &w, retry, ok_answer("actor-1", 3600.into()));
    let exchange = tick_sends(&host, &w).expect("alice's exchange");
    answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));
    assert_authorization(&host, 10, "Bearer delegated-1");
    assert_not_logged(&host, "actor-1");
}

#[test]
fn the_actors_invalid_client_with_a_fetched_assertion_fetches_it_again_then_sends_the_exchanges() {
    let fetched_actor = serde_json::json!({"providers": {"agent": {
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "agent-identity",
        "client_assertion_source": {"cluster": "federated_token"},
        "grant": "client_credentials"
    }}});
    for refetched in [true, false] {
        let host = FakeHost::default();
        let w = delegating_with(fetched_actor.clone());
        let assertion = jwt_with_exp(1_800_003_600, "agent");
        let served = |status: u16| crate::exchange::CallAnswer {
            status: Some(status),
            body: assertion.clone().into_bytes(),
            ..Default::default()
        };
        let (_f, _) = request_from(&host, &w, 10, ALICE);
        let fetch = tick_sends(&host, &w).expect("the actor's assertion is fetched");
        answer_at_root(&host, &w, fetch, served(200));
        let actor_request = tick_sends(&host, &w).unwrap();
        let invalid_client = fixture_answer(401, "error-invalid-client.json");
        answer_at_root(&host, &w, actor_request, invalid_client);
        let refetch = tick_sends(&host, &w).expect("fetched again");
        if !refetched {
            answer_at_root(&host, &w, refetch, served(500));
            assert_eq!(host.stream(10).reply.map(|r| r.status), Some(503));
            assert_eq!(w.borrow().in_flight(), 0);
            assert_eq!(sent_with_grant(&host, TOKEN_EXCHANGE), 0);
            continue;
        }
        answer_at_root(&host, &w, refetch, served(200));
        let again = tick_sends(&host, &w).expect("the actor's token asked for again");
        answer_at_root(&host, &w, again, ok_answer("actor-1", 3600.into()));
        let exchange = tick_sends(&host, &w).expect("alice's exchange");
        answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));
        assert_authorization(&host, 10, "Bearer delegated-1");
    }
}

#[test]
fn a_refresh_that_finds_the_actor_refused_keeps_serving_the_delegated_token() {
    let host = FakeHost::default();
    let w = delegating_worker();
    let exchange = alice_sent_with(&host, &w, ok_answer("actor-1", 3600.into()));
    answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));
    // The actor's token is gone from the shared cache (another key took its slot, say).
    let actor_key = crate::cache_key::CacheKey::derive(
        "https://login.example/tenant/oauth2/v2.0/token",
        "agent-identity",
        "client_credentials",
        ACTOR_SCOPE,
        "",
    );
    w.borrow().shared_cache().forget(&host, &actor_key);
    host.now.set(host.now.get() + 3250);
    let (_g, verdict) = request_from(&host, &w, 11, ALICE);
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 11, "Bearer delegated-1");
    let refresh = tick_sends(&host, &w).expect("the actor's token first");
    answer_at_root(
        &host,
        &w,
        refresh,
        fixture_answer(400, "error-invalid-scope.json"),
    );
    assert_eq!(w.borrow().in_flight(), 0, "the waiting refresh is dropped");
    assert_eq!(tick_sends(&host, &w), None);
    let (_h, verdict) = request_from(&host, &w, 12, ALICE);
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 12, "Bearer delegated-1");
    assert_eq!(
        tick_sends(&host, &w),
        None,
        "tried again later, not at once"
    );
    assert_eq!(sent_with_grant(&host, TOKEN_EXCHANGE), 1);
}

#[test]
fn a_refusal_of_the_actors_token_never_challenges_the_callers_own_token() {
    for refusal in [
        fixture_answer(400, "error-invalid-grant-expired.json"),
        fixture_answer(400, "error-interaction-required.json"),
    ] {
        let host = FakeHost::default();
        let w = delegating_worker();
        let (_a, _) = request_from(&host, &w, 10, ALICE);
        let actor_request = tick_sends(&host, &w).unwrap();
        answer_at_root(&host, &w, actor_request, refusal);
        // And while that refusal is remembered, a new caller is told the same at once.
        let (_b, _) = request_from(&host, &w, 11, BOB);
        for id in [10, 11] {
            let reply = host.stream(id).reply.expect("refused");
            assert_eq!(
                reply.status, 502,
                "the application's failure, not the caller's"
            );
            assert_eq!(reply.header("www-authenticate"), None);
        }
        let (first, again) = (
            host.stream(10).reply.unwrap(),
            host.stream(11).reply.unwrap(),
        );
        assert_eq!((first.headers, first.body), (again.headers, again.body));
        assert_eq!(host.token_requests(), 1);
    }
}

#[test]
fn an_actor_refresh_started_by_a_new_exchange_keeps_within_the_exchange_limit() {
    let host = FakeHost::default();
    let w = delegating_with(serde_json::json!({"max_exchanges_in_flight_per_worker": 2}));
    let exchange = alice_sent_with(&host, &w, ok_answer("actor-1", 3600.into()));
    answer_at_root(&host, &w, exchange, ok_answer("delegated-1", 3600.into()));
    // Carol's exchange is in flight when the actor's token comes due for its refresh.
    host.now.set(host.now.get() + 3000);
    request_from(&host, &w, 11, &jwt_with_exp(1_800_007_200, "carol"));
    host.now.set(host.now.get() + 250);
    request_from(&host, &w, 12, &jwt_with_exp(1_800_007_200, "bob"));
    let in_flight = w.borrow().in_flight();
    assert!(in_flight <= 2, "{in_flight} in flight");
}

#[test]
fn the_actors_token_is_kept_when_every_caller_waiting_for_it_left() {
    let host = FakeHost::default();
    let w = with_actors_own_target();
    let (mut alice, _) = request_from(&host, &w, 10, ALICE);
    let (mut own, _) = crate::testing::request(&host, &w, 11, "sts-admin.example.com", "/", None);
    let actor_request = tick_sends(&host, &w).unwrap();
    for (id, filter) in [(10, &mut alice), (11, &mut own)] {
        host.close_stream(id);
        filter.on_end(&host);
    }
    answer_at_root(&host, &w, actor_request, ok_answer("actor-1", 3600.into()));
    request_from(&host, &w, 12, BOB);
    let last = host.dispatched.borrow().last().cloned().unwrap();
    assert_eq!(last.field("actor_token"), Some("actor-1"), "from the cache");
    assert_eq!(host.token_requests(), 2);
}

#[test]
fn when_the_request_that_sent_the_actors_token_request_leaves_the_root_sends_it_again() {
    let host = FakeHost::default();
    let w = with_actors_own_target();
    let (mut own, _) = crate::testing::request(&host, &w, 11, "sts-admin.example.com", "/", None);
    assert_eq!(host.dispatched.borrow()[0].from, 11);
    request_from(&host, &w, 10, ALICE);
    host.close_stream(11);
    own.on_end(&host);
    let resent = tick_sends(&host, &w).expect("sent again, from the root");
    assert_eq!(field_of(&host, resent, "grant_type"), "client_credentials");
    answer_at_root(&host, &w, resent, ok_answer("actor-1", 3600.into()));
    let exchange = tick_sends(&host, &w).expect("alice's exchange");
    assert_eq!(field_of(&host, exchange, "actor_token"), "actor-1");
}
