//! Which requests are a target's: unmatched requests, targets by Envoy's route cluster, authorities
//! and paths that could be read two ways, and a reconfiguration in the middle of an exchange.

use std::cell::RefCell;
use std::rc::Rc;

use crate::config;
use crate::exchange::Worker;
use crate::filter::{RequestFilter, Verdict};
use crate::metrics::Counter;
use crate::testing::{
    answer, assert_authorization, ok_answer, request, request_from, worker, worker_with, FakeHost,
    ALICE, BEARER_U, SECRET, U,
};

#[test]
fn unmatched_request_goes_on_without_its_authorization_by_default() {
    let host = FakeHost::default();
    let w = worker();
    let (_f, v) = request(&host, &w, 10, "other.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(host.header_of(10, "authorization"), None);
    assert!(host.dispatched.borrow().is_empty());
    assert_eq!(host.counted(Counter::UnmatchedStripped), 1);
    // Without Authorization there is nothing to strip: it just goes on.
    let (_f, v) = request(&host, &w, 13, "other.example.com", "/", None);
    assert_eq!(v, Verdict::Continue);
    assert_eq!(host.counted(Counter::PassedThrough), 1);
    // The bare domain of a wildcard and a path outside the prefix are unmatched too.
    for (id, authority, path) in [
        (11, "team.svc.cluster.local", "/v2/"),
        (12, "a.team.svc.cluster.local", "/v1/"),
    ] {
        let (_f, v) = request(&host, &w, id, authority, path, Some(BEARER_U));
        assert_eq!(v, Verdict::Continue);
    }
}

#[test]
fn unmatched_request_keeps_its_authorization_only_when_told_to_pass_through() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"unmatched": "passthrough"}));
    let (_f, v) = request(&host, &w, 10, "other.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Continue);
    assert_authorization(&host, 10, BEARER_U);
}

#[test]
fn unmatched_request_is_403_when_configured_to_deny() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"unmatched": "deny"}));
    let (_f, v) = request(&host, &w, 10, "other.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    assert_eq!(host.stream(10).reply.unwrap().status, 403);
}

#[test]
fn a_request_envoy_redirected_to_an_unmatched_host_loses_its_authorization_even_in_passthrough() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"unmatched": "passthrough"}));
    host.open_stream(
        10,
        &[
            (":authority", "evil.example.org"),
            (":path", "/steal"),
            ("authorization", "Bearer obo-token-for-api"),
            ("x-envoy-original-url", "http://api.example.com/redirect"),
        ],
    );
    let mut filter = RequestFilter::new(10, w.clone());
    assert_eq!(filter.on_request_headers(&host), Verdict::Continue);
    assert_eq!(host.header_of(10, "authorization"), None);
    assert_eq!(host.counted(Counter::UnmatchedStripped), 1);
}

#[test]
fn an_authority_with_another_port_or_a_trailing_dot_never_gets_the_targets_token() {
    let host = FakeHost::default();
    let w = worker();
    // Another port is another virtual host to Envoy: unmatched, so stripped.
    let (_f, v) = request(&host, &w, 10, "api.example.com:8443", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(host.header_of(10, "authorization"), None);
    // Malformed but aimed at the target: 400, nothing forwarded, no token request.
    for (id, authority) in [
        (11, "api.example.com."),
        (12, "api.example.com:"),
        (13, "api.example.com:0x50"),
        (14, "api.example.com..:80"),
        (15, "x.team.svc.cluster.local."),
    ] {
        let (_f, v) = request(&host, &w, id, authority, "/v2/x", Some(BEARER_U));
        assert_eq!(v, Verdict::Pause, "{authority}");
        let reply = host.stream(id).reply.expect(authority);
        assert_eq!(reply.status, 400, "{authority}");
        assert!(!host.stream(id).resumed);
    }
    assert!(host.dispatched.borrow().is_empty());
}

#[test]
fn a_path_a_normalizer_would_change_is_400_where_a_prefix_target_would_consider_it() {
    let host = FakeHost::default();
    let w = worker();
    let prefixed = "a.team.svc.cluster.local";
    for (id, path) in [
        (10, "/v2/../v1/x"),
        (11, "/v2/%2e%2e/v1"),
        (12, "//v2/x"),
        (13, "/%762/x"),
    ] {
        let (_f, v) = request(&host, &w, id, prefixed, path, Some(BEARER_U));
        assert_eq!(v, Verdict::Pause, "{path}");
        assert_eq!(host.stream(id).reply.unwrap().status, 400, "{path}");
    }
    // api.example.com has no prefix target: its paths are the upstream's business.
    let (_f, v) = request(&host, &w, 14, "api.example.com", "/a/../b", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(14).reply.is_none());
    assert_eq!(host.token_requests(), 1);
    // Where Envoy normalizes paths first, the filter takes them as they come.
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"envoy_normalizes_paths": true}));
    let (_f, v) = request(&host, &w, 15, prefixed, "/v2/./x", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(15).reply.is_none());
    assert_eq!(host.token_requests(), 1);
}

fn worker_by_cluster() -> Rc<RefCell<Worker>> {
    worker_with(serde_json::json!({
        "targets": [
            {"cluster": "outbound|80||orders.shop.svc.cluster.local", "scope": "api://orders/.default"},
            {"host": "api.example.com", "cluster": "api", "scope": "api://api/.default"}
        ]
    }))
}

/// User U's request to `authority` that Envoy's route sends to `cluster`.
fn routed(
    host: &FakeHost,
    w: &Rc<RefCell<Worker>>,
    id: u32,
    authority: &str,
    cluster: &str,
) -> (RequestFilter, Verdict) {
    host.open_stream(
        id,
        &[
            (":authority", authority),
            (":path", "/"),
            ("authorization", BEARER_U),
        ],
    );
    host.set_route_cluster(id, cluster);
    let mut filter = RequestFilter::new(id, w.clone());
    let verdict = filter.on_request_headers(host);
    (filter, verdict)
}

#[test]
fn a_cluster_target_matches_every_name_envoy_routes_to_its_cluster_and_nothing_else() {
    let host = FakeHost::default();
    let w = worker_by_cluster();
    let orders = "outbound|80||orders.shop.svc.cluster.local";
    for (id, authority) in [
        (10, "orders"),
        (11, "orders.shop"),
        (12, "orders.shop.svc:80"),
        (13, "10.96.0.7"),
    ] {
        let (_f, v) = routed(&host, &w, id, authority, orders);
        assert_eq!(v, Verdict::Pause, "{authority}");
    }
    let sent = host.dispatched.borrow();
    assert_eq!(sent.len(), 1, "one token request, shared by the four");
    assert_eq!(sent[0].field("scope"), Some("api://orders/.default"));
    drop(sent);
    // The same name, routed elsewhere, is not that target's.
    let elsewhere = "outbound|80||other.shop.svc.cluster.local";
    let (_f, v) = routed(&host, &w, 14, "orders", elsewhere);
    assert_eq!(v, Verdict::Continue);
    assert_eq!(host.header_of(14, "authorization"), None);
    // Host and cluster must both hold.
    let (_f, v) = routed(&host, &w, 15, "api.example.com", "partner");
    assert_eq!(v, Verdict::Continue);
    assert_eq!(host.header_of(15, "authorization"), None);
    let (_f, v) = routed(&host, &w, 16, "api.example.com", "api");
    assert_eq!(v, Verdict::Pause);
    assert_eq!(host.token_requests(), 2);
}

#[test]
fn the_route_is_read_only_when_a_target_names_a_cluster() {
    let host = FakeHost::default();
    request_from(&host, &worker(), 10, U);
    request(
        &host,
        &worker(),
        11,
        "other.example.com",
        "/",
        Some(BEARER_U),
    );
    assert_eq!(host.route_reads.get(), 0);
    let orders = "outbound|80||orders.shop.svc.cluster.local";
    routed(&host, &worker_by_cluster(), 12, "orders", orders);
    assert_eq!(host.route_reads.get(), 1);
}

#[test]
fn a_token_exchanged_across_a_reconfiguration_is_never_served_for_another_target() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request_from(&host, &w, 10, ALICE);
    // The same worker gets a configuration in which target 0 is another host and scope.
    let reordered = serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_secret": SECRET,
        "targets": [
            {"host": "other.example.com", "scope": "api://prod.team.other/.default"},
            {"host": "api.example.com", "scope": "api://prod.team.api/.default"}
        ]
    });
    let cfg = config::parse(reordered.to_string().as_bytes(), &|_| None).unwrap();
    w.borrow_mut().configure(cfg);
    answer(&host, &mut f, 0, ok_answer("obo-for-api", 3599.into()));
    assert_authorization(&host, 10, "Bearer obo-for-api");
    // Target 0 now: a new exchange for its own scope, never the token filed under index 0.
    let bearer = format!("Bearer {ALICE}");
    let (_f, v) = request(&host, &w, 11, "other.example.com", "/", Some(&bearer));
    assert_eq!(v, Verdict::Pause);
    let sent = host.dispatched.borrow();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1].field("scope"),
        Some("api://prod.team.other/.default")
    );
}
