//! The request path through a fake host: what is forwarded, what is refused, and how many token
//! requests leave.

use std::cell::RefCell;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::config;
use crate::exchange::{CallAnswer, Worker};
use crate::fake_host::FakeHost;
use crate::filter::{RequestFilter, Verdict};
use crate::host::{DispatchError, Host, LogLevel};
use crate::metrics::Counter;

const ROOT: u32 = 1;
const SECRET: &str = "client-secret-value";
/// A subject token (a JWT valid until the fake clock's start plus an hour).
const SUBJECT_1: &str =
    "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6InN1YmplY3QtMSJ9.c2ln";
const ALICE: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6ImFsaWNlIn0.c2ln";
const BOB: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6ImJvYiJ9.c2ln";
const U: &str = "eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6InUifQ.c2ln";
const BEARER_U: &str = "Bearer eyJhbGciOiJSUzI1NiJ9.eyJleHAiOjE4MDAwMDM2MDAsInN1YiI6InUifQ.c2ln";

fn worker_with(extra: serde_json::Value) -> Rc<RefCell<Worker>> {
    let mut json = serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_secret": SECRET,
        "targets": [
            {"host": "api.example.com", "scope": "api://prod.team.api/.default"},
            {"host": "*.team.svc.cluster.local", "path_prefix": "/v2/", "scope": "api://prod.team.other/.default"}
        ],
        "cache": {"max_entries": 100, "expiry_skew_s": 60}
    });
    if let (Some(base), Some(extra)) = (json.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    let cfg = config::parse(json.to_string().as_bytes(), &|_| None).unwrap();
    let mut worker = Worker::default();
    worker.configure(cfg);
    Rc::new(RefCell::new(worker))
}

fn worker() -> Rc<RefCell<Worker>> {
    worker_with(serde_json::json!({}))
}

fn jwt_with_exp(exp: u64, user: &str) -> String {
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp},"sub":"{user}"}}"#))
    )
}

/// Opens stream `id` to `authority`/`path` with `authorization`, and runs its request headers.
fn request(
    host: &FakeHost,
    w: &Rc<RefCell<Worker>>,
    id: u32,
    authority: &str,
    path: &str,
    authorization: Option<&str>,
) -> (RequestFilter, Verdict) {
    let mut headers = vec![
        (":authority", authority),
        (":path", path),
        (":method", "GET"),
    ];
    if let Some(a) = authorization {
        headers.push(("authorization", a));
    }
    host.open_stream(id, &headers);
    let mut filter = RequestFilter::new(id, w.clone());
    let verdict = filter.on_request_headers(host);
    (filter, verdict)
}

/// User U's request `id` to api.example.com goes on at once, carrying `authorization`.
fn assert_forwarded_with(host: &FakeHost, w: &Rc<RefCell<Worker>>, id: u32, authorization: &str) {
    assert_forwarded_with_token(host, w, id, BEARER_U, authorization);
}

/// A request `id` to api.example.com carrying `bearer` goes on at once, carrying `expected`.
fn assert_forwarded_with_token(
    host: &FakeHost,
    w: &Rc<RefCell<Worker>>,
    id: u32,
    bearer: &str,
    expected: &str,
) {
    let (_f, v) = request(host, w, id, "api.example.com", "/", Some(bearer));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(
        host.header_of(id, "authorization").as_deref(),
        Some(expected)
    );
}

fn ok_answer(token: &str, expires_in: serde_json::Value) -> CallAnswer {
    CallAnswer {
        status: Some(200),
        retry_after: None,
        overloaded: false,
        body: serde_json::json!({"token_type": "Bearer", "access_token": token, "expires_in": expires_in})
            .to_string()
            .into_bytes(),
    }
}

fn fixture_answer(status: u16, name: &str) -> CallAnswer {
    let path = format!("{}/../fixtures/entra/{name}", env!("CARGO_MANIFEST_DIR"));
    CallAnswer {
        status: Some(status),
        retry_after: (status == 429).then(|| "60".to_string()),
        overloaded: false,
        body: std::fs::read(path).unwrap(),
    }
}

/// Delivers `answer` to the token request numbered `nth` (0-based), as the host would.
fn answer(host: &FakeHost, filter: &mut RequestFilter, nth: usize, answer: CallAnswer) {
    let d = host.dispatched.borrow()[nth].clone();
    host.enter(d.from);
    filter.on_token_answer(host, d.token_id, &answer);
}

/// Answers the stream's token request with `answer`, and any retry the filter sends with the
/// same, ticking the root context as Envoy would.
fn answer_every_try(
    host: &FakeHost,
    w: &Rc<RefCell<Worker>>,
    filter: &mut RequestFilter,
    call_answer: CallAnswer,
) {
    let first = host.dispatched.borrow().len() - 1;
    answer(host, filter, first, call_answer.clone());
    while host.tick_period_ms.get() > 0 {
        host.extra_ms.set(host.extra_ms.get() + 150);
        host.enter(ROOT);
        let sent_before = host.dispatched.borrow().len();
        let next = w.borrow_mut().on_tick(host, ROOT);
        host.tick_period_ms.set(next);
        if host.dispatched.borrow().len() > sent_before {
            let d = host.dispatched.borrow()[sent_before].clone();
            w.borrow_mut()
                .complete(host, d.token_id, &call_answer, ROOT);
        }
    }
}

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
    assert_eq!(
        host.header_of(10, "authorization").as_deref(),
        Some("Bearer obo-1")
    );
}

#[test]
fn second_request_is_served_from_the_cache_without_a_token_request() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(
        &host,
        &w,
        10,
        "api.example.com",
        "/",
        Some(&format!("Bearer {SUBJECT_1}")),
    );
    answer(&host, &mut f, 0, ok_answer("obo-1", "3599".into()));
    let (_f2, verdict) = request(
        &host,
        &w,
        11,
        "API.example.com",
        "/y",
        Some(&format!("bearer {SUBJECT_1}")),
    );
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(
        host.header_of(11, "authorization").as_deref(),
        Some("Bearer obo-1")
    );
    assert_eq!(host.dispatched.borrow().len(), 1);
}

#[test]
fn cache_is_per_user_and_per_scope() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(
        &host,
        &w,
        10,
        "api.example.com",
        "/",
        Some(&format!("Bearer {ALICE}")),
    );
    answer(&host, &mut f, 0, ok_answer("obo-alice", 3599.into()));
    let (_f, v) = request(
        &host,
        &w,
        11,
        "api.example.com",
        "/",
        Some(&format!("Bearer {BOB}")),
    );
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
    assert_eq!(host.dispatched.borrow().len(), 3);
    assert_eq!(
        host.dispatched.borrow()[2].field("scope"),
        Some("api://prod.team.other/.default")
    );
}

#[test]
fn cached_token_expires_at_expires_in_minus_skew() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 160.into()));
    host.now.set(host.now.get() + 99);
    assert_eq!(
        request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Continue
    );
    host.now.set(host.now.get() + 1);
    assert_eq!(
        request(&host, &w, 12, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Pause
    );
}

#[test]
fn cached_token_is_never_used_past_the_subject_tokens_exp() {
    let host = FakeHost::default();
    let w = worker();
    let subject = format!("Bearer {}", jwt_with_exp(host.now.get() + 30, "alice"));
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(&subject));
    answer(&host, &mut f, 0, ok_answer("obo-1", 3599.into()));
    host.now.set(host.now.get() + 29);
    assert_eq!(
        request(&host, &w, 11, "api.example.com", "/", Some(&subject)).1,
        Verdict::Continue
    );
    host.now.set(host.now.get() + 1);
    assert_eq!(
        request(&host, &w, 12, "api.example.com", "/", Some(&subject)).1,
        Verdict::Pause
    );
}

#[test]
fn concurrent_requests_for_one_key_share_one_token_request() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    let _others: Vec<_> = (11..15)
        .map(|id| request(&host, &w, id, "api.example.com", "/", Some(BEARER_U)))
        .collect();
    assert_eq!(host.dispatched.borrow().len(), 1);
    answer(&host, &mut first, 0, ok_answer("obo-1", 3599.into()));
    for id in 10..15 {
        assert!(host.stream(id).resumed, "stream {id}");
        assert_eq!(
            host.header_of(id, "authorization").as_deref(),
            Some("Bearer obo-1")
        );
    }
    assert_eq!(host.current(), 10, "host is back on the answering stream");
    assert_eq!(w.borrow().in_flight(), 0);
}

#[test]
fn failed_exchange_refuses_every_waiting_request() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    let _second = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut first,
        0,
        fixture_answer(400, "error-invalid-grant-expired.json"),
    );
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
    let (mut first, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    let (mut second, _) = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
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
    let (mut first, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    let _second = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    host.close_stream(10);
    host.enter(10);
    first.on_end(&host);
    assert_eq!(host.tick_period_ms.get(), 1);
    host.enter(ROOT);
    assert_eq!(w.borrow_mut().on_tick(&host, ROOT), 0);
    let resent = host.dispatched.borrow()[1].clone();
    assert_eq!(resent.from, ROOT);
    assert_eq!(resent.field("assertion"), Some(U));
    w.borrow_mut().complete(
        &host,
        resent.token_id,
        &ok_answer("obo-1", 3599.into()),
        ROOT,
    );
    assert!(host.stream(11).resumed);
    assert_eq!(
        host.header_of(11, "authorization").as_deref(),
        Some("Bearer obo-1")
    );
    assert_eq!(host.current(), ROOT);
}

#[test]
fn sender_that_goes_away_alone_leaves_nothing_in_flight() {
    let host = FakeHost::default();
    let w = worker();
    let (mut first, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    first.on_end(&host);
    assert_eq!(host.tick_period_ms.get(), 0);
    assert_eq!(w.borrow().in_flight(), 0);
}

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
    assert_eq!(
        request(
            &host,
            &w,
            11,
            "team.svc.cluster.local",
            "/v2/",
            Some(BEARER_U)
        )
        .1,
        Verdict::Continue
    );
    assert_eq!(
        request(
            &host,
            &w,
            12,
            "a.team.svc.cluster.local",
            "/v1/",
            Some(BEARER_U)
        )
        .1,
        Verdict::Continue
    );
}

#[test]
fn unmatched_request_keeps_its_authorization_only_when_told_to_pass_through() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"unmatched": "passthrough"}));
    let (_f, v) = request(&host, &w, 10, "other.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(
        host.header_of(10, "authorization").as_deref(),
        Some(BEARER_U)
    );
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
    for (id, path) in [
        (10, "/v2/../v1/x"),
        (11, "/v2/%2e%2e/v1"),
        (12, "//v2/x"),
        (13, "/%762/x"),
    ] {
        let (_f, v) = request(
            &host,
            &w,
            id,
            "a.team.svc.cluster.local",
            path,
            Some(BEARER_U),
        );
        assert_eq!(v, Verdict::Pause, "{path}");
        assert_eq!(host.stream(id).reply.unwrap().status, 400, "{path}");
    }
    // api.example.com has no prefix target: its paths are the upstream's business.
    let (_f, v) = request(&host, &w, 14, "api.example.com", "/a/../b", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(14).reply.is_none());
    assert_eq!(host.dispatched.borrow().len(), 1);
    // Where Envoy normalizes paths first, the filter takes them as they come.
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"envoy_normalizes_paths": true}));
    let (_f, v) = request(
        &host,
        &w,
        15,
        "a.team.svc.cluster.local",
        "/v2/./x",
        Some(BEARER_U),
    );
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(15).reply.is_none());
    assert_eq!(host.dispatched.borrow().len(), 1);
}

fn worker_by_cluster() -> Rc<RefCell<Worker>> {
    worker_with(serde_json::json!({
        "targets": [
            {"cluster": "outbound|80||orders.shop.svc.cluster.local", "scope": "api://orders/.default"},
            {"host": "api.example.com", "cluster": "api", "scope": "api://api/.default"}
        ]
    }))
}

/// A request to `authority` that Envoy's route sends to `cluster`.
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
    let (_f, v) = routed(
        &host,
        &w,
        14,
        "orders",
        "outbound|80||other.shop.svc.cluster.local",
    );
    assert_eq!(v, Verdict::Continue);
    assert_eq!(host.header_of(14, "authorization"), None);
    // Host and cluster must both hold.
    let (_f, v) = routed(&host, &w, 15, "api.example.com", "partner");
    assert_eq!(v, Verdict::Continue);
    assert_eq!(host.header_of(15, "authorization"), None);
    let (_f, v) = routed(&host, &w, 16, "api.example.com", "api");
    assert_eq!(v, Verdict::Pause);
    assert_eq!(host.dispatched.borrow().len(), 2);
}

#[test]
fn the_route_is_read_only_when_a_target_names_a_cluster() {
    let host = FakeHost::default();
    request(&host, &worker(), 10, "api.example.com", "/", Some(BEARER_U));
    request(
        &host,
        &worker(),
        11,
        "other.example.com",
        "/",
        Some(BEARER_U),
    );
    assert_eq!(host.route_reads.get(), 0);
    routed(
        &host,
        &worker_by_cluster(),
        12,
        "orders",
        "outbound|80||orders.shop.svc.cluster.local",
    );
    assert_eq!(host.route_reads.get(), 1);
}

#[test]
fn a_token_exchanged_across_a_reconfiguration_is_never_served_for_another_target() {
    let host = FakeHost::default();
    let w = worker();
    let bearer = format!("Bearer {ALICE}");
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(&bearer));
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
    assert_eq!(
        host.header_of(10, "authorization").as_deref(),
        Some("Bearer obo-for-api")
    );
    // Target 0 now: a new exchange for its own scope, never the token filed under index 0.
    let (_f, v) = request(&host, &w, 11, "other.example.com", "/", Some(&bearer));
    assert_eq!(v, Verdict::Pause);
    let sent = host.dispatched.borrow();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        sent[1].field("scope"),
        Some("api://prod.team.other/.default")
    );
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
fn matched_request_without_a_bearer_token_is_401() {
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
        Some("Bearer"),
        // Characters a token cannot have, caught after the front-cache lookup.
        Some("Bearer a b"),
        Some("Bearer ab\u{7f}"),
        Some("Bearer \u{e4}b"),
    ] {
        let host = FakeHost::default();
        let w = worker();
        let (_f, v) = request(&host, &w, 10, "api.example.com", "/", auth);
        assert_eq!(v, Verdict::Pause);
        let reply = host.stream(10).reply.unwrap();
        assert_eq!(reply.status, 401, "{auth:?}");
        assert!(
            reply.body.contains(r#""error":"invalid_token""#),
            "{}",
            reply.body
        );
        assert_eq!(
            reply.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\"")
        );
        assert!(host.dispatched.borrow().is_empty());
    }
}

#[test]
fn token_request_that_cannot_be_sent_is_503() {
    let host = FakeHost::default();
    host.dispatch_error.set(Some(DispatchError::UnknownCluster));
    let w = worker();
    let (_f, v) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    assert_eq!(host.stream(10).reply.unwrap().status, 503);
    assert_eq!(w.borrow().in_flight(), 0);
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
        (
            CallAnswer {
                status: Some(500),
                retry_after: None,
                overloaded: false,
                body: b"oops".to_vec(),
            },
            502,
        ),
        (
            CallAnswer {
                status: Some(200),
                retry_after: None,
                overloaded: false,
                body: b"<html>".to_vec(),
            },
            502,
        ),
        (
            CallAnswer {
                status: Some(200),
                retry_after: None,
                overloaded: false,
                body: br#"{"expires_in":1}"#.to_vec(),
            },
            502,
        ),
        (
            CallAnswer {
                status: Some(504),
                retry_after: None,
                overloaded: false,
                body: b"upstream request timeout".to_vec(),
            },
            504,
        ),
        (
            CallAnswer {
                status: Some(503),
                retry_after: None,
                overloaded: false,
                body: b"upstream connect error".to_vec(),
            },
            503,
        ),
        (
            CallAnswer {
                status: None,
                retry_after: None,
                overloaded: false,
                body: Vec::new(),
            },
            503,
        ),
    ];
    for (i, (call_answer, status)) in cases.into_iter().enumerate() {
        let host = FakeHost::default();
        let w = worker();
        let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
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
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut f,
        0,
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
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut f,
        0,
        fixture_answer(401, "error-invalid-client.json"),
    );
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
    assert_eq!(
        request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Pause
    );
    assert_eq!(host.dispatched.borrow().len(), 2);
}

fn server_error() -> CallAnswer {
    CallAnswer {
        status: Some(500),
        retry_after: None,
        overloaded: false,
        body: b"boom".to_vec(),
    }
}

#[test]
fn server_error_is_retried_once_from_the_root_then_refused() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer_every_try(&host, &w, &mut f, server_error());
    assert_eq!(host.dispatched.borrow().len(), 2, "one retry, no more");
    assert_eq!(host.dispatched.borrow()[1].from, ROOT);
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
}

#[test]
fn retry_that_succeeds_resumes_the_request() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut f,
        0,
        CallAnswer {
            status: None,
            retry_after: None,
            overloaded: false,
            body: vec![],
        },
    );
    assert!(host.stream(10).reply.is_none(), "waits for the retry");
    host.extra_ms.set(200);
    host.enter(ROOT);
    w.borrow_mut().on_tick(&host, ROOT);
    let retry = host.dispatched.borrow()[1].clone();
    assert!(
        retry.timeout < std::time::Duration::from_millis(5000),
        "retry spends what is left of the budget"
    );
    w.borrow_mut().complete(
        &host,
        retry.token_id,
        &ok_answer("obo-1", 3599.into()),
        ROOT,
    );
    assert!(host.stream(10).resumed);
    assert_eq!(
        host.header_of(10, "authorization").as_deref(),
        Some("Bearer obo-1")
    );
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
        let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
        answer(&host, &mut f, 0, a);
        assert_eq!(host.tick_period_ms.get(), 0);
        assert!(host.stream(10).reply.is_some());
    }
}

#[test]
fn no_retry_without_time_left_in_the_budget() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"token_timeout_ms": 100}));
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, server_error());
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
    assert_eq!(host.dispatched.borrow().len(), 1);
}

#[test]
fn throttled_scope_fails_fast_with_retry_after_but_cached_tokens_are_served() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(
        &host,
        &w,
        10,
        "api.example.com",
        "/",
        Some(&format!("Bearer {ALICE}")),
    );
    answer(&host, &mut f, 0, ok_answer("obo-alice", 3599.into()));
    let (mut f, _) = request(
        &host,
        &w,
        11,
        "api.example.com",
        "/",
        Some(&format!("Bearer {BOB}")),
    );
    answer(
        &host,
        &mut f,
        1,
        fixture_answer(429, "error-throttled.json"),
    );
    // Bob again, and another user: refused at once, no token request.
    for (id, who) in [(12, BOB), (13, SUBJECT_1)] {
        let (_f, v) = request(
            &host,
            &w,
            id,
            "api.example.com",
            "/",
            Some(&format!("Bearer {who}")),
        );
        assert_eq!(v, Verdict::Pause);
        let reply = host.stream(id).reply.unwrap();
        assert_eq!(
            (reply.status, reply.header("retry-after")),
            (503, Some("60"))
        );
    }
    assert_eq!(host.dispatched.borrow().len(), 2);
    // Alice's cached token is still served.
    assert_eq!(
        request(
            &host,
            &w,
            14,
            "api.example.com",
            "/",
            Some(&format!("Bearer {ALICE}"))
        )
        .1,
        Verdict::Continue
    );
    // Another scope is not affected.
    assert_eq!(
        request(
            &host,
            &w,
            15,
            "x.team.svc.cluster.local",
            "/v2/",
            Some(&format!("Bearer {BOB}"))
        )
        .1,
        Verdict::Pause
    );
    assert_eq!(host.dispatched.borrow().len(), 3);
    // Once the wait is over, the scope exchanges again.
    host.now.set(host.now.get() + 60);
    request(
        &host,
        &w,
        16,
        "api.example.com",
        "/",
        Some(&format!("Bearer {BOB}")),
    );
    assert_eq!(host.dispatched.borrow().len(), 4);
}

/// A user who must step up (MFA, a Conditional Access policy) gets the same challenge for the same
/// subject token until they bring a new one: their next requests are answered from memory for
/// `negative_cache_s`, not each with a token request.
#[test]
fn a_claims_challenge_from_entra_id_is_remembered_briefly_and_answered_the_same() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut f,
        0,
        fixture_answer(400, "error-interaction-required.json"),
    );
    let first = host.stream(10).reply.unwrap();
    assert_eq!(first.status, 401);
    let (_f, v) = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    let again = host.stream(11).reply.unwrap();
    assert_eq!(host.dispatched.borrow().len(), 1, "no second token request");
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
    request(&host, &w, 12, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(
        host.dispatched.borrow().len(),
        2,
        "asked again after negative_cache_s"
    );
}

#[test]
fn invalid_grant_is_remembered_briefly_for_that_user_only() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut f,
        0,
        fixture_answer(400, "error-invalid-grant-expired.json"),
    );
    let (_f, v) = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    let reply = host.stream(11).reply.unwrap();
    assert_eq!(reply.status, 401);
    assert!(
        reply.body.contains("500133"),
        "the same answer as the first time: {}",
        reply.body
    );
    assert_eq!(host.dispatched.borrow().len(), 1);
    // Another user is not affected.
    request(
        &host,
        &w,
        12,
        "api.example.com",
        "/",
        Some(&format!("Bearer {ALICE}")),
    );
    assert_eq!(host.dispatched.borrow().len(), 2);
    // After negative_cache_s (5 s), the same token is tried again.
    host.now.set(host.now.get() + 5);
    request(&host, &w, 13, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(host.dispatched.borrow().len(), 3);
}

/// The upstream answers stream `id` with a continuous access evaluation challenge.
fn upstream_asks_for_more_claims(host: &FakeHost, filter: &mut RequestFilter, id: u32) {
    host.respond(
        id,
        &[
            (":status", "401"),
            (
                "www-authenticate",
                r#"Bearer error="insufficient_claims", claims="eyJ9""#,
            ),
        ],
    );
    filter.on_response_headers(host);
}

#[test]
fn upstream_insufficient_claims_drops_the_cached_token() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 3599.into()));
    host.respond(10, &[(":status", "200")]);
    f.on_response_headers(&host);
    let (mut f2, v) = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Continue, "still cached after a 200");
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 0);
    upstream_asks_for_more_claims(&host, &mut f2, 11);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 1);
    assert_eq!(
        request(&host, &w, 12, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Pause
    );
    assert_eq!(host.dispatched.borrow().len(), 2);
}

/// gRPC carries `UNAUTHENTICATED` in an HTTP 200 (trailers-only: `grpc-status` among the headers).
#[test]
fn a_grpc_upstreams_unauthenticated_with_a_claims_challenge_drops_the_cached_token() {
    let host = FakeHost::default();
    let w = worker();
    let challenge = r#"Bearer error="insufficient_claims", claims="eyJ9""#;
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 3599.into()));
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
    let (mut f, v) = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
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
    assert_eq!(
        request(&host, &w, 12, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Pause
    );
}

/// A challenge to the token that replaced a challenged one, within the holdoff: the upstream wants
/// what no new token from this subject token carries (an authentication context the user has not
/// met), so dropping it would make every request of this user a token request.
#[test]
fn a_worker_drops_a_key_for_a_claims_challenge_once_per_holdoff() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 3599.into()));
    upstream_asks_for_more_claims(&host, &mut f, 10);
    let (mut f, v) = request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause, "the first challenge dropped the token");
    answer(&host, &mut f, 1, ok_answer("obo-2", 3599.into()));
    host.now.set(host.now.get() + 59);
    upstream_asks_for_more_claims(&host, &mut f, 11);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 1);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallengesKept), 1);
    assert_forwarded_with(&host, &w, 12, "Bearer obo-2");
    assert_eq!(host.dispatched.borrow().len(), 2, "no token request");
    // 60 s (the default holdoff) after the drop, a challenge drops again.
    host.now.set(host.now.get() + 1);
    let (mut f, _) = request(&host, &w, 13, "api.example.com", "/", Some(BEARER_U));
    upstream_asks_for_more_claims(&host, &mut f, 13);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 2);
    assert_eq!(
        request(&host, &w, 14, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Pause
    );
    assert_eq!(host.dispatched.borrow().len(), 3);
}

#[test]
fn with_no_claims_challenge_holdoff_every_challenge_drops() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"cache": {"claims_challenge_holdoff_s": 0}}));
    for (nth, id) in [(0, 10), (1, 11), (2, 12)] {
        let (mut f, v) = request(&host, &w, id, "api.example.com", "/", Some(BEARER_U));
        assert_eq!(v, Verdict::Pause, "request {id} exchanged");
        answer(
            &host,
            &mut f,
            nth,
            ok_answer(&format!("obo-{id}"), 3599.into()),
        );
        upstream_asks_for_more_claims(&host, &mut f, id);
    }
    assert_eq!(host.counted(Counter::UpstreamClaimsChallenges), 3);
    assert_eq!(host.counted(Counter::UpstreamClaimsChallengesKept), 0);
}

#[test]
fn a_claims_challenge_the_filter_answered_itself_drops_nothing() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut f,
        0,
        fixture_answer(400, "error-interaction-required.json"),
    );
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
        host.shared_get_versioned("entra-obo-filter/v1/dropped").0,
        None,
        "no drop announced"
    );
}

#[test]
fn a_user_whose_requests_come_minutes_apart_is_served_without_reading_shared_data() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 3599.into()));
    // The first hit on this worker takes the token from the shared cache into the worker's own.
    request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    host.now.set(host.now.get() + 20 * 60);
    host.shared_reads.borrow_mut().clear();
    assert_forwarded_with(&host, &w, 12, "Bearer obo-1");
    let reads = host.shared_reads.borrow();
    assert!(
        reads.iter().all(|k| *k == "entra-obo-filter/v1/dropped"),
        "only the once-a-second look for dropped tokens: {reads:?}"
    );
}

#[test]
fn a_token_dropped_on_one_worker_is_not_served_by_another_a_second_later() {
    let host = FakeHost::default();
    let (w1, w2) = (worker(), worker());
    let (mut f, _) = request(&host, &w1, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 3599.into()));
    // The other worker takes the token from the shared cache into its own.
    assert_eq!(
        request(&host, &w2, 11, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Continue
    );
    let (mut f, _) = request(&host, &w1, 12, "api.example.com", "/", Some(BEARER_U));
    upstream_asks_for_more_claims(&host, &mut f, 12);
    host.now.set(host.now.get() + 1);
    assert_eq!(
        request(&host, &w2, 13, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Pause,
        "exchanges again instead of sending the dropped token"
    );
    assert_eq!(host.dispatched.borrow().len(), 2);
}

#[test]
fn a_token_dropped_on_one_worker_leaves_the_other_users_in_the_other_workers_front_cache() {
    let host = FakeHost::default();
    let (w1, w2) = (worker(), worker());
    let bearer_alice = format!("Bearer {ALICE}");
    let (mut f, _) = request(&host, &w1, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-u", 3599.into()));
    let (mut f, _) = request(&host, &w1, 11, "api.example.com", "/", Some(&bearer_alice));
    answer(&host, &mut f, 1, ok_answer("obo-alice", 3599.into()));
    // The other worker takes both tokens from the shared cache into its own.
    request(&host, &w2, 20, "api.example.com", "/", Some(BEARER_U));
    request(&host, &w2, 21, "api.example.com", "/", Some(&bearer_alice));
    let (mut f, _) = request(&host, &w1, 12, "api.example.com", "/", Some(BEARER_U));
    upstream_asks_for_more_claims(&host, &mut f, 12);
    host.now.set(host.now.get() + 1);
    host.shared_reads.borrow_mut().clear();
    let (_, v) = request(&host, &w2, 22, "api.example.com", "/", Some(&bearer_alice));
    assert_eq!(v, Verdict::Continue);
    assert_eq!(
        host.header_of(22, "authorization").as_deref(),
        Some("Bearer obo-alice")
    );
    assert!(
        read_no_token_from_shared_data(&host),
        "Alice is still served from the worker's own cache: {:?}",
        host.shared_reads.borrow()
    );
    assert_eq!(
        request(&host, &w2, 23, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Pause,
        "exchanges again instead of sending the dropped token"
    );
    assert_eq!(host.dispatched.borrow().len(), 3);
}

#[test]
fn subject_tokens_failing_local_checks_are_401_without_a_token_request() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"require_audience": true}));
    let expired = jwt_with_exp(host.now.get() - 61, "alice");
    let other_audience = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"exp":{},"aud":"someone-else"}}"#,
            host.now.get() + 600
        ))
    );
    let huge = "a".repeat(16 * 1024 + 1);
    for (id, token, why) in [
        (10, "not-a-jwt", "not a JWT"),
        (11, expired.as_str(), "expired"),
        (
            12,
            other_audience.as_str(),
            "not issued for this application",
        ),
        (13, huge.as_str(), "too large"),
    ] {
        let (_f, v) = request(
            &host,
            &w,
            id,
            "api.example.com",
            "/",
            Some(&format!("Bearer {token}")),
        );
        assert_eq!(v, Verdict::Pause);
        let reply = host.stream(id).reply.unwrap();
        assert_eq!(reply.status, 401);
        assert!(
            reply.header("www-authenticate").unwrap().contains(why),
            "{why}"
        );
    }
    assert!(host.dispatched.borrow().is_empty());
}

/// A subject token with these claims (besides `exp`, an hour away) as a bearer value.
fn bearer_with(host: &FakeHost, claims: &str) -> String {
    let payload = format!(r#"{{"exp":{},{claims}}}"#, host.now.get() + 3600);
    format!(
        "Bearer eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(payload)
    )
}

#[test]
fn foreign_issuers_tenants_and_tokens_without_exp_are_401_without_a_token_request() {
    let host = FakeHost::default();
    let ours = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let w = worker_with(serde_json::json!({
        "allowed_issuers": [ours],
        "allowed_tenants": [tenant]
    }));
    let no_exp = format!(
        "Bearer eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"{ours}","tid":"{tenant}"}}"#))
    );
    let other_tenant = "00000000-0000-0000-0000-000000000001";
    for (id, bearer, why) in [
        (
            10,
            bearer_with(
                &host,
                &format!(r#""iss":"https://evil.example/v2.0","tid":"{tenant}""#),
            ),
            "issuer",
        ),
        (
            11,
            bearer_with(&host, &format!(r#""iss":"{ours}","tid":"{other_tenant}""#)),
            "tenant",
        ),
        (
            12,
            bearer_with(&host, &format!(r#""tid":"{tenant}""#)),
            "issuer",
        ),
        (13, no_exp, "no expiry"),
    ] {
        let (_f, v) = request(&host, &w, id, "api.example.com", "/", Some(&bearer));
        assert_eq!(v, Verdict::Pause, "{why}");
        let reply = host.stream(id).reply.unwrap();
        assert_eq!(reply.status, 401, "{why}");
        assert!(
            reply.header("www-authenticate").unwrap().contains(why),
            "{why}"
        );
    }
    assert!(host.dispatched.borrow().is_empty());
    let bearer = bearer_with(
        &host,
        &format!(r#""iss":"{ours}","tid":"{}""#, tenant.to_uppercase()),
    );
    let (_f, v) = request(&host, &w, 14, "api.example.com", "/", Some(&bearer));
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        host.dispatched.borrow().len(),
        1,
        "our own tenant's token is exchanged"
    );
}

#[test]
fn past_the_exchange_limit_a_new_user_is_503_at_once_and_the_others_go_on() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"max_exchanges_in_flight_per_worker": 2}));
    let users: Vec<String> = (0..3)
        .map(|n| bearer_with(&host, &format!(r#""sub":"user-{n}""#)))
        .collect();
    let (mut first, _) = request(&host, &w, 10, "api.example.com", "/", Some(&users[0]));
    let (_second, _) = request(&host, &w, 11, "api.example.com", "/", Some(&users[1]));
    // The first user's second request joins the exchange in flight: no new one.
    let (_joined, v) = request(&host, &w, 12, "api.example.com", "/", Some(&users[0]));
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(12).reply.is_none());
    let (_third, v) = request(&host, &w, 13, "api.example.com", "/", Some(&users[2]));
    assert_eq!(v, Verdict::Pause);
    let reply = host.stream(13).reply.unwrap();
    assert_eq!(
        (reply.status, reply.header("retry-after")),
        (503, Some("1"))
    );
    assert_eq!(host.dispatched.borrow().len(), 2);
    assert_eq!(host.counted(Counter::OverExchangeLimit), 1);
    // Once one exchange is over, there is room again; the cached user is served meanwhile.
    answer(&host, &mut first, 0, ok_answer("obo-0", 3599.into()));
    assert_forwarded_with_token(&host, &w, 14, &users[0], "Bearer obo-0");
    let (_third, v) = request(&host, &w, 15, "api.example.com", "/", Some(&users[2]));
    assert_eq!(v, Verdict::Pause);
    assert!(host.stream(15).reply.is_none());
    assert_eq!(host.dispatched.borrow().len(), 3);
}

fn timed_out() -> CallAnswer {
    CallAnswer {
        status: Some(504),
        body: b"upstream request timeout".to_vec(),
        ..CallAnswer::default()
    }
}

/// Alice's and Bob's exchanges start together; Bob's times out after the whole budget, and
/// Alice's is answered `answer_alice` halfway, if at all. Then Carol, a new user, asks: her reply
/// (None: her token request was sent).
fn carol_after_bobs_timeout(answer_alice: Option<CallAnswer>) -> Option<u32> {
    let host = FakeHost::default();
    let w = worker();
    let (mut alice, _) = request(
        &host,
        &w,
        10,
        "api.example.com",
        "/",
        Some(&format!("Bearer {ALICE}")),
    );
    let (mut bob, _) = request(
        &host,
        &w,
        11,
        "api.example.com",
        "/",
        Some(&format!("Bearer {BOB}")),
    );
    host.extra_ms.set(2_500);
    if let Some(a) = answer_alice {
        answer(&host, &mut alice, 0, a);
    }
    host.extra_ms.set(5_000);
    answer(&host, &mut bob, 1, timed_out());
    assert_eq!(host.stream(11).reply.unwrap().status, 504);
    request(
        &host,
        &w,
        12,
        "api.example.com",
        "/",
        Some(&format!("Bearer {U}")),
    );
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
    let (mut f, _) = request(
        &host,
        &w,
        10,
        "api.example.com",
        "/",
        Some(&format!("Bearer {ALICE}")),
    );
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
    assert_eq!(host.dispatched.borrow().len(), 1, "not retried");
    assert_eq!(host.counted(Counter::ExchangesRefusedByEnvoy), 1);
    // The next user's exchange is sent at once: the scope does not back off.
    let (_f, _) = request(
        &host,
        &w,
        11,
        "api.example.com",
        "/",
        Some(&format!("Bearer {BOB}")),
    );
    assert!(host.stream(11).reply.is_none());
    assert_eq!(host.dispatched.borrow().len(), 2);
    // "no healthy upstream" is Envoy's answer too.
    let no_host = CallAnswer {
        status: Some(503),
        body: b"no healthy upstream".to_vec(),
        ..CallAnswer::default()
    };
    let mut f = RequestFilter::new(11, w.clone());
    answer_every_try(&host, &w, &mut f, no_host);
    assert_eq!(host.counted(Counter::ExchangesRefusedByEnvoy), 2);
    let (_f, _) = request(
        &host,
        &w,
        12,
        "api.example.com",
        "/",
        Some(&format!("Bearer {U}")),
    );
    assert!(host.stream(12).reply.is_none());
}

#[test]
fn audience_matching_the_client_id_is_exchanged() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"require_audience": true}));
    let mine = format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(format!(
            r#"{{"exp":{},"aud":"client-1"}}"#,
            host.now.get() + 600
        ))
    );
    assert_eq!(
        request(
            &host,
            &w,
            10,
            "api.example.com",
            "/",
            Some(&format!("Bearer {mine}"))
        )
        .1,
        Verdict::Pause
    );
    assert_eq!(host.dispatched.borrow().len(), 1);
}

#[test]
fn no_log_line_holds_a_secret_or_a_token() {
    let host = FakeHost::default();
    let w = worker();
    let answers = [
        ok_answer("issued-token-value", 3599.into()),
        fixture_answer(400, "error-invalid-grant-expired.json"),
        fixture_answer(400, "error-interaction-required.json"),
        fixture_answer(429, "error-throttled.json"),
        fixture_answer(401, "error-invalid-client.json"),
        CallAnswer {
            status: Some(200),
            retry_after: None,
            overloaded: false,
            body: b"not json".to_vec(),
        },
        CallAnswer {
            status: None,
            retry_after: None,
            overloaded: false,
            body: Vec::new(),
        },
    ];
    let mut subjects = Vec::new();
    for (i, a) in answers.into_iter().enumerate() {
        let scope_host = if i % 2 == 0 {
            "api.example.com"
        } else {
            "x.team.svc.cluster.local"
        };
        host.now.set(host.now.get() + 10_000);
        let subject = jwt_with_exp(host.now.get() + 3600, &format!("user-{i}"));
        let (mut f, _) = request(
            &host,
            &w,
            100 + i as u32,
            scope_host,
            "/v2/",
            Some(&format!("Bearer {subject}")),
        );
        answer_every_try(&host, &w, &mut f, a);
        subjects.push(subject);
    }
    request(&host, &w, 200, "api.example.com", "/", None);
    let logs = host.logs.borrow();
    assert!(
        logs.iter().any(|(l, _)| *l == LogLevel::Warn),
        "failures are logged"
    );
    for (_, line) in logs.iter() {
        let secrets = subjects
            .iter()
            .map(String::as_str)
            .chain([SECRET, "issued-token-value"]);
        for secret in secrets {
            assert!(!line.contains(secret), "log line leaks: {line}");
        }
    }
}

/// Two workers of one Envoy: two worker states over one host (one shared data).
fn two_workers() -> (Rc<RefCell<Worker>>, Rc<RefCell<Worker>>) {
    (worker(), worker())
}

#[test]
fn second_worker_waits_for_the_first_workers_exchange() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    let (mut fa, _) = request(&host, &a, 10, "api.example.com", "/", Some(BEARER_U));
    let (_fb, v) = request(&host, &b, 20, "api.example.com", "/", Some(BEARER_U));
    let _fb2 = request(&host, &b, 21, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        host.dispatched.borrow().len(),
        1,
        "only the first worker asks the IdP"
    );
    assert!(host.tick_period_ms.get() > 0, "the second worker polls");
    answer(&host, &mut fa, 0, ok_answer("obo-1", 3599.into()));
    host.enter(ROOT);
    assert_eq!(b.borrow_mut().on_tick(&host, ROOT), 0);
    for id in [10, 20, 21] {
        assert!(host.stream(id).resumed, "stream {id}");
        assert_eq!(
            host.header_of(id, "authorization").as_deref(),
            Some("Bearer obo-1")
        );
    }
    assert_eq!(host.dispatched.borrow().len(), 1);
}

/// Whether every shared-data read since `shared_reads` was cleared was the once-a-second look for
/// dropped tokens.
fn read_no_token_from_shared_data(host: &FakeHost) -> bool {
    let reads = host.shared_reads.borrow();
    reads.iter().all(|k| *k == "entra-obo-filter/v1/dropped")
}

#[test]
fn after_an_exchange_the_users_next_request_finds_the_token_in_the_worker() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    // Worker a exchanges; worker b's request waits for a's exchange and reads its token.
    let (mut fa, _) = request(&host, &a, 10, "api.example.com", "/", Some(BEARER_U));
    let _fb = request(&host, &b, 20, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut fa, 0, ok_answer("obo-1", 3599.into()));
    host.enter(ROOT);
    b.borrow_mut().on_tick(&host, ROOT);
    assert!(host.stream(20).resumed);
    host.shared_reads.borrow_mut().clear();
    assert_forwarded_with(&host, &a, 11, "Bearer obo-1");
    assert_forwarded_with(&host, &b, 21, "Bearer obo-1");
    assert!(
        read_no_token_from_shared_data(&host),
        "{:?}",
        host.shared_reads.borrow()
    );
}

#[test]
fn waiting_worker_exchanges_itself_when_the_claimer_dies() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    let _fa = request(&host, &a, 10, "api.example.com", "/", Some(BEARER_U));
    let _fb = request(&host, &b, 20, "api.example.com", "/", Some(BEARER_U));
    host.enter(ROOT);
    b.borrow_mut().on_tick(&host, ROOT);
    assert_eq!(
        host.dispatched.borrow().len(),
        1,
        "still waiting while the claim lives"
    );
    // Worker a never answers (its VM died); its claim runs out.
    host.extra_ms.set(5_000 + 500 + 1);
    b.borrow_mut().on_tick(&host, ROOT);
    let resent = host.dispatched.borrow()[1].clone();
    assert_eq!(resent.from, ROOT);
    b.borrow_mut().complete(
        &host,
        resent.token_id,
        &ok_answer("obo-2", 3599.into()),
        ROOT,
    );
    assert!(host.stream(20).resumed);
}

#[test]
fn waiting_worker_takes_over_when_the_claimer_fails_without_a_token() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    let (mut fa, _) = request(&host, &a, 10, "api.example.com", "/", Some(BEARER_U));
    let _fb = request(&host, &b, 20, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut fa,
        0,
        fixture_answer(401, "error-invalid-client.json"),
    );
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
    host.enter(ROOT);
    b.borrow_mut().on_tick(&host, ROOT);
    assert_eq!(
        host.dispatched.borrow().len(),
        2,
        "the claim was released; b asks itself"
    );
}

#[test]
fn waiting_worker_gets_the_remembered_invalid_grant() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    let (mut fa, _) = request(&host, &a, 10, "api.example.com", "/", Some(BEARER_U));
    let _fb = request(&host, &b, 20, "api.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut fa,
        0,
        fixture_answer(400, "error-invalid-grant-expired.json"),
    );
    host.enter(ROOT);
    b.borrow_mut().on_tick(&host, ROOT);
    assert_eq!(host.stream(20).reply.unwrap().status, 401);
    assert_eq!(host.dispatched.borrow().len(), 1);
}

#[test]
fn token_in_its_refresh_window_is_served_while_the_root_refreshes_it() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    // expires_in 1060, skew 60: used for 1000 s; 10% of that (100 s) is the refresh window.
    answer(&host, &mut f, 0, ok_answer("obo-1", 1060.into()));
    host.now.set(host.now.get() + 899);
    assert_eq!(
        request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Continue
    );
    assert_eq!(host.tick_period_ms.get(), 0, "not yet in the window");
    host.now.set(host.now.get() + 1);
    assert_forwarded_with(&host, &w, 12, "Bearer obo-1");
    assert_eq!(
        host.dispatched.borrow().len(),
        1,
        "sent from the root, not from the request"
    );
    host.enter(ROOT);
    w.borrow_mut().on_tick(&host, ROOT);
    let refresh = host.dispatched.borrow()[1].clone();
    assert_eq!(refresh.from, ROOT);
    // More requests while the refresh is out: served, no second refresh.
    assert_eq!(
        request(&host, &w, 13, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Continue
    );
    assert_eq!(host.dispatched.borrow().len(), 2);
    w.borrow_mut().complete(
        &host,
        refresh.token_id,
        &ok_answer("obo-2", 1060.into()),
        ROOT,
    );
    // The next request in the window finds the new token in the shared cache and is sent with it.
    assert_forwarded_with(&host, &w, 14, "Bearer obo-2");
}

#[test]
fn a_refresh_outlives_a_request_that_joined_it_and_went_away() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 1060.into()));
    host.now.set(host.now.get() + 999);
    request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    host.enter(ROOT);
    w.borrow_mut().on_tick(&host, ROOT);
    let refresh = host.dispatched.borrow()[1].clone();
    // The token runs out before the refresh is answered: a request waits for the refresh, and
    // its caller hangs up.
    host.now.set(host.now.get() + 2);
    let (mut gone, verdict) = request(&host, &w, 12, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Pause);
    gone.on_end(&host);
    w.borrow_mut().complete(
        &host,
        refresh.token_id,
        &ok_answer("obo-2", 1060.into()),
        ROOT,
    );
    assert_forwarded_with(&host, &w, 13, "Bearer obo-2");
    assert_eq!(
        host.dispatched.borrow().len(),
        2,
        "the refresh's token was kept"
    );
}

#[test]
fn failed_refresh_keeps_serving_the_valid_token() {
    let host = FakeHost::default();
    let w = worker();
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 1060.into()));
    host.now.set(host.now.get() + 950);
    request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    host.enter(ROOT);
    w.borrow_mut().on_tick(&host, ROOT);
    let refresh = host.dispatched.borrow()[1].clone();
    let rejected = fixture_answer(400, "error-invalid-grant-expired.json");
    w.borrow_mut()
        .complete(&host, refresh.token_id, &rejected, ROOT);
    host.now.set(host.now.get() + 6);
    assert_forwarded_with(&host, &w, 12, "Bearer obo-1");
    assert_eq!(
        host.dispatched.borrow().len(),
        2,
        "the next try waits a little"
    );
}

#[test]
fn a_token_refreshed_by_one_worker_is_not_refreshed_again_by_another() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    let (mut f, _) = request(&host, &a, 10, "api.example.com", "/", Some(BEARER_U));
    answer(&host, &mut f, 0, ok_answer("obo-1", 1060.into()));
    // Worker b caches the token in its front cache too.
    request(&host, &b, 20, "api.example.com", "/", Some(BEARER_U));
    host.now.set(host.now.get() + 901);
    // Worker a notices the window and refreshes.
    request(&host, &a, 11, "api.example.com", "/", Some(BEARER_U));
    host.enter(ROOT);
    a.borrow_mut().on_tick(&host, ROOT);
    let refresh = host.dispatched.borrow()[1].clone();
    a.borrow_mut().complete(
        &host,
        refresh.token_id,
        &ok_answer("obo-2", 1060.into()),
        ROOT,
    );
    // Worker b's front entry is older, but the shared cache already has the new token.
    assert_eq!(
        request(&host, &b, 21, "api.example.com", "/", Some(BEARER_U)).1,
        Verdict::Continue
    );
    assert_forwarded_with(&host, &b, 22, "Bearer obo-2");
    host.enter(ROOT);
    assert_eq!(b.borrow_mut().on_tick(&host, ROOT), 0);
    assert_eq!(
        host.dispatched.borrow().len(),
        2,
        "one refresh across the workers"
    );
}

#[test]
fn every_request_and_exchange_is_counted_once_by_its_outcome() {
    use crate::metrics::Counter as C;
    let host = FakeHost::default();
    let (w, w2) = two_workers();
    // A miss, its exchange succeeds; two hits: from the front cache of the worker that exchanged,
    // and from the shared cache on another worker.
    let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
    host.extra_ms.set(40);
    answer(
        &host,
        &mut f,
        0,
        ok_answer("obo-u", serde_json::json!(3600)),
    );
    request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    request(&host, &w2, 12, "api.example.com", "/", Some(BEARER_U));
    // Passed through; refused locally for want of a token.
    request(&host, &w, 13, "other.example.com", "/", None);
    request(&host, &w, 14, "api.example.com", "/", None);
    // A miss whose exchange ends in invalid_grant, refusing its two waiters.
    let bearer_bob = format!("Bearer {BOB}");
    let (mut f, _) = request(&host, &w, 15, "api.example.com", "/", Some(&bearer_bob));
    request(&host, &w, 16, "api.example.com", "/", Some(&bearer_bob));
    answer(
        &host,
        &mut f,
        1,
        fixture_answer(400, "error-invalid-grant-expired.json"),
    );
    assert_eq!(
        host.counters(),
        vec![
            (C::CacheHits.name(), 2),
            (C::CacheHitsShared.name(), 1),
            (C::CacheMisses.name(), 3),
            (C::ExchangesInvalidGrant.name(), 1),
            (C::ExchangesOk.name(), 1),
            (C::FailedExchange.name(), 2),
            (C::PassedThrough.name(), 1),
            (C::RejectedLocally.name(), 1),
        ]
    );
    assert_eq!(host.latencies_ms.borrow()[0], 40);
    assert_eq!(host.latencies_ms.borrow().len(), 2);
}

#[test]
fn exchange_outcomes_are_counted_under_their_names() {
    use crate::metrics::Counter as C;
    for (answer_to_give, counter) in [
        (
            fixture_answer(400, "error-interaction-required.json"),
            C::ExchangesInteractionRequired,
        ),
        (
            fixture_answer(429, "error-throttled.json"),
            C::ExchangesThrottled,
        ),
        (server_error(), C::ExchangesUpstreamError),
    ] {
        let host = FakeHost::default();
        let w = worker();
        let (mut f, _) = request(&host, &w, 10, "api.example.com", "/", Some(BEARER_U));
        answer_every_try(&host, &w, &mut f, answer_to_give);
        assert_eq!(
            host.counted(counter),
            1,
            "{counter:?}: {:?}",
            host.counters()
        );
    }
}

#[test]
fn failed_exchange_log_names_scope_host_request_id_and_idp_ids() {
    let host = FakeHost::default();
    let w = worker();
    host.open_stream(
        10,
        &[
            (":authority", "api.example.com"),
            (":path", "/"),
            ("authorization", BEARER_U),
            ("x-request-id", "req-42"),
        ],
    );
    let mut f = RequestFilter::new(10, w.clone());
    f.on_request_headers(&host);
    answer(
        &host,
        &mut f,
        0,
        fixture_answer(400, "error-invalid-grant-expired.json"),
    );
    let logs = host.logs.borrow();
    let line = logs
        .iter()
        .find(|(level, m)| *level == LogLevel::Warn && m.contains("token exchange failed"))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("no failed-exchange line in {logs:?}"));
    for part in [
        "scope=api://prod.team.api/.default",
        "host=api.example.com",
        "request_id=req-42",
        "error=invalid_grant",
        "error_codes=[",
        "trace_id=",
        "correlation_id=",
    ] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(!line.contains(U), "the subject token is in the log: {line}");
}

/// The base configuration plus a client_credentials and a token_exchange provider, each with a
/// target of its own.
fn worker_with_grants(existing_authorization: &str) -> Rc<RefCell<Worker>> {
    worker_with(serde_json::json!({
        "providers": {
            "app": {"token_cluster": "entra_id", "grant": "client_credentials",
                    "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
                    "client_id": "client-1", "client_secret": SECRET,
                    "existing_authorization": existing_authorization},
            "tokenx": {"token_cluster": "tokenx", "grant": "token_exchange",
                       "token_endpoint": "https://tokenx.example/token",
                       "client_id": "dev:team:me", "client_secret": "tokenx-secret"}
        },
        "targets": [
            {"host": "api.example.com", "scope": "api://prod.team.api/.default"},
            {"host": "app.example.com", "provider": "app", "scope": "api://prod.team.app/.default"},
            {"host": "tx.example.com", "provider": "tokenx", "audience": "dev:team:app"}
        ]
    }))
}

#[test]
fn client_credentials_target_gets_the_applications_token_without_a_caller_token() {
    let host = FakeHost::default();
    let w = worker_with_grants("replace");
    let (mut f, verdict) = request(&host, &w, 10, "app.example.com", "/", None);
    assert_eq!(verdict, Verdict::Pause);
    let d = host.dispatched.borrow()[0].clone();
    assert_eq!(d.field("grant_type"), Some("client_credentials"));
    assert_eq!(d.field("scope"), Some("api://prod.team.app/.default"));
    assert_eq!(d.field("assertion"), None);
    answer(
        &host,
        &mut f,
        0,
        ok_answer("app-token", serde_json::json!(3600)),
    );
    assert!(host.stream(10).resumed);
    assert_eq!(
        host.header_of(10, "authorization").as_deref(),
        Some("Bearer app-token")
    );
    // Any later request to the target, with or without a caller's token, shares that token.
    let (_f, verdict) = request(&host, &w, 11, "app.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(
        host.header_of(11, "authorization").as_deref(),
        Some("Bearer app-token")
    );
    assert_eq!(host.dispatched.borrow().len(), 1);
}

#[test]
fn client_credentials_target_keeps_or_refuses_an_existing_authorization_when_told() {
    let host = FakeHost::default();
    let w = worker_with_grants("keep");
    let (_f, verdict) = request(&host, &w, 10, "app.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Continue);
    assert_eq!(
        host.header_of(10, "authorization").as_deref(),
        Some(BEARER_U)
    );
    assert!(host.dispatched.borrow().is_empty());
    let w = worker_with_grants("refuse");
    let (_f, verdict) = request(&host, &w, 11, "app.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Pause);
    assert_eq!(host.stream(11).reply.map(|r| r.status), Some(400));
    // Without one, both exchange as usual.
    request(&host, &w, 12, "app.example.com", "/", None);
    assert_eq!(host.dispatched.borrow().len(), 1);
}

#[test]
fn token_exchange_target_sends_the_callers_token_for_its_audience() {
    let host = FakeHost::default();
    let w = worker_with_grants("replace");
    let (mut f, verdict) = request(&host, &w, 10, "tx.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Pause);
    let d = host.dispatched.borrow()[0].clone();
    assert_eq!(d.cluster, "tokenx");
    assert_eq!(
        d.field("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(d.field("subject_token"), Some(U));
    assert_eq!(d.field("audience"), Some("dev:team:app"));
    assert_eq!(d.field("client_secret"), Some("tokenx-secret"));
    assert!(d
        .headers
        .contains(&(":authority".to_string(), "tokenx.example".to_string())));
    answer(
        &host,
        &mut f,
        0,
        ok_answer("tx-token", serde_json::json!(3600)),
    );
    assert_eq!(
        host.header_of(10, "authorization").as_deref(),
        Some("Bearer tx-token")
    );
    // The same caller to the OBO target is a different token: a token request of its own.
    request(&host, &w, 11, "api.example.com", "/", Some(BEARER_U));
    assert_eq!(host.dispatched.borrow().len(), 2);
    // And without a caller's token, a token_exchange target refuses like an OBO one.
    let (_f, verdict) = request(&host, &w, 12, "tx.example.com", "/", None);
    assert_eq!(verdict, Verdict::Pause);
    assert_eq!(host.stream(12).reply.map(|r| r.status), Some(401));
}

#[test]
fn failed_token_exchange_log_names_the_grant_and_the_audience() {
    let host = FakeHost::default();
    let w = worker_with_grants("replace");
    let (mut f, _) = request(&host, &w, 10, "tx.example.com", "/", Some(BEARER_U));
    answer(
        &host,
        &mut f,
        0,
        fixture_answer(400, "error-invalid-grant-expired.json"),
    );
    let logs = host.logs.borrow();
    assert!(
        logs.iter().any(|(_, m)| m.contains(
            "token exchange failed: grant=token_exchange audience=dev:team:app host=tx.example.com"
        )),
        "{logs:?}"
    );
}

/// A worker whose default provider (on-behalf-of) authenticates with the test key.
fn worker_with_private_key(client_assertion: serde_json::Value) -> Rc<RefCell<Worker>> {
    let json = serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_jwk": crate::client_assertion::test_key::jwk(),
        "client_assertion": client_assertion,
        "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]
    });
    let cfg = config::parse(json.to_string().as_bytes(), &|_| None).unwrap();
    let mut worker = Worker::default();
    worker.configure(cfg);
    Rc::new(RefCell::new(worker))
}

/// The `client_assertion` of every token request sent so far.
fn assertions_sent(host: &FakeHost) -> Vec<String> {
    let dispatched = host.dispatched.borrow();
    let sent = dispatched.iter().map(|d| d.field("client_assertion"));
    sent.map(|a| a.unwrap_or_default().to_string()).collect()
}

#[test]
fn one_signed_assertion_serves_new_users_until_reuse_s_passes_or_the_client_is_refused() {
    let host = FakeHost::default();
    // Reused for 30 s, the default for on-behalf-of (half the 60 s lifetime).
    let w = worker_with_private_key(serde_json::json!({}));
    let users = [ALICE, BOB, U, SUBJECT_1].map(|t| format!("Bearer {t}"));
    let (_alice, _) = request(&host, &w, 10, "api.example.com", "/", Some(&users[0]));
    host.now.set(host.now.get() + 29);
    let (mut bob, _) = request(&host, &w, 11, "api.example.com", "/", Some(&users[1]));
    let sent = assertions_sent(&host);
    assert!(!sent[0].is_empty());
    assert_eq!(sent[1], sent[0], "signed again within reuse_s");
    // An invalid_client answer may be the assertion's fault: the next request signs anew.
    answer(
        &host,
        &mut bob,
        1,
        fixture_answer(401, "error-invalid-client.json"),
    );
    let (_u, _) = request(&host, &w, 12, "api.example.com", "/", Some(&users[2]));
    let sent = assertions_sent(&host);
    assert_ne!(sent[2], sent[1]);
    host.now.set(host.now.get() + 30);
    let (_s, _) = request(&host, &w, 13, "api.example.com", "/", Some(&users[3]));
    let sent = assertions_sent(&host);
    assert_ne!(sent[3], sent[2], "sent again after reuse_s");
    assert_eq!(host.counted(Counter::ClientAssertionsSigned), 3);
}

#[test]
fn with_reuse_s_0_every_token_request_carries_a_new_assertion() {
    let host = FakeHost::default();
    let w = worker_with_private_key(serde_json::json!({"reuse_s": 0}));
    for (id, user) in [(10, ALICE), (11, BOB), (12, U)] {
        let authorization = format!("Bearer {user}");
        request(&host, &w, id, "api.example.com", "/", Some(&authorization));
    }
    let sent: std::collections::HashSet<String> = assertions_sent(&host).into_iter().collect();
    assert_eq!(sent.len(), 3);
    assert_eq!(host.counted(Counter::ClientAssertionsSigned), 3);
}
