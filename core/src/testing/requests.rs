//! Workers with the test configuration, requests through `RequestFilter`, and the token
//! endpoint's answers delivered as the host would.

use std::cell::RefCell;
use std::rc::Rc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::{fixture, FakeHost};
use crate::config;
use crate::exchange::{CallAnswer, Worker};
use crate::filter::{RequestFilter, Verdict};

/// The root context's id: where retries and refreshes are sent from.
pub const ROOT: u32 = 1;
pub const SECRET: &str = "client-secret-value";

/// A worker with the test configuration: an OBO target on api.example.com and one on
/// `*.team.svc.cluster.local/v2/`, with the fields of `extra` added or replaced.
pub fn worker_with(extra: serde_json::Value) -> Rc<RefCell<Worker>> {
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
    configured(json)
}

pub fn worker() -> Rc<RefCell<Worker>> {
    worker_with(serde_json::json!({}))
}

/// A worker configured with exactly `json`.
pub fn configured(json: serde_json::Value) -> Rc<RefCell<Worker>> {
    let cfg = config::parse(json.to_string().as_bytes(), &|_| None).unwrap();
    let mut worker = Worker::default();
    worker.configure(cfg);
    Rc::new(RefCell::new(worker))
}

/// Two workers of one Envoy: two worker states over one host (one shared data).
pub fn two_workers() -> (Rc<RefCell<Worker>>, Rc<RefCell<Worker>>) {
    (worker(), worker())
}

/// A subject token of `user` that expires at `exp`.
pub fn jwt_with_exp(exp: u64, user: &str) -> String {
    jwt_with(&format!(r#"{{"exp":{exp},"sub":"{user}"}}"#))
}

/// A subject token with these claims (besides `exp`, an hour away).
pub fn jwt_with_claims(host: &FakeHost, claims: &str) -> String {
    jwt_with(&format!(r#"{{"exp":{},{claims}}}"#, host.now.get() + 3600))
}

/// A subject token with this payload.
pub fn jwt_with(payload: &str) -> String {
    format!(
        "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
        URL_SAFE_NO_PAD.encode(payload)
    )
}

/// Opens stream `id` to `authority`/`path` with `authorization`, and runs its request headers.
pub fn request(
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

/// The request `id` of the user with subject token `user` to api.example.com.
pub fn request_from(
    host: &FakeHost,
    w: &Rc<RefCell<Worker>>,
    id: u32,
    user: &str,
) -> (RequestFilter, Verdict) {
    let bearer = format!("Bearer {user}");
    request(host, w, id, "api.example.com", "/", Some(&bearer))
}

/// The request `id` of `user` to api.example.com, whose token request is answered `answer`.
pub fn request_answered(
    host: &FakeHost,
    w: &Rc<RefCell<Worker>>,
    id: u32,
    user: &str,
    call_answer: CallAnswer,
) -> RequestFilter {
    let (mut filter, _) = request_from(host, w, id, user);
    let newest = host.dispatched.borrow().len() - 1;
    answer(host, &mut filter, newest, call_answer);
    filter
}

/// The request `id` of `user` to api.example.com goes on at once, carrying `expected`.
pub fn assert_forwarded_with(
    host: &FakeHost,
    w: &Rc<RefCell<Worker>>,
    id: u32,
    user: &str,
    expected: &str,
) {
    let (_f, v) = request_from(host, w, id, user);
    assert_eq!(v, Verdict::Continue);
    assert_authorization(host, id, expected);
}

/// Stream `id` now carries `Authorization: expected`.
pub fn assert_authorization(host: &FakeHost, id: u32, expected: &str) {
    assert_eq!(
        host.header_of(id, "authorization").as_deref(),
        Some(expected)
    );
}

/// A token, valid for `expires_in` seconds.
pub fn ok_answer(token: &str, expires_in: serde_json::Value) -> CallAnswer {
    CallAnswer {
        status: Some(200),
        retry_after: None,
        overloaded: false,
        body: serde_json::json!({"token_type": "Bearer", "access_token": token, "expires_in": expires_in})
            .to_string()
            .into_bytes(),
    }
}

/// The recorded Entra ID answer `name` with `status` (and `Retry-After: 60` with a 429).
pub fn fixture_answer(status: u16, name: &str) -> CallAnswer {
    CallAnswer {
        status: Some(status),
        retry_after: (status == 429).then(|| "60".to_string()),
        overloaded: false,
        body: fixture(name),
    }
}

pub fn server_error() -> CallAnswer {
    CallAnswer {
        status: Some(500),
        retry_after: None,
        overloaded: false,
        body: b"boom".to_vec(),
    }
}

/// Envoy's own answer when the token request ran out of time.
pub fn timed_out() -> CallAnswer {
    CallAnswer {
        status: Some(504),
        body: b"upstream request timeout".to_vec(),
        ..CallAnswer::default()
    }
}

/// A reset or an unreachable token endpoint: no status at all.
pub fn no_answer() -> CallAnswer {
    CallAnswer {
        status: None,
        retry_after: None,
        overloaded: false,
        body: Vec::new(),
    }
}

/// Delivers `answer` to the token request numbered `nth` (0-based), as the host would.
pub fn answer(host: &FakeHost, filter: &mut RequestFilter, nth: usize, answer: CallAnswer) {
    let d = host.dispatched.borrow()[nth].clone();
    host.enter(d.from);
    filter.on_token_answer(host, d.token_id, &answer);
}

/// The root context's tick, as Envoy runs it: its next tick period.
pub fn tick(host: &FakeHost, w: &Rc<RefCell<Worker>>) -> u64 {
    host.enter(ROOT);
    w.borrow_mut().on_tick(host, ROOT)
}

/// Delivers `answer` to the token request numbered `nth`, sent from the root context.
pub fn answer_at_root(host: &FakeHost, w: &Rc<RefCell<Worker>>, nth: usize, answer: CallAnswer) {
    let token_id = host.dispatched.borrow()[nth].token_id;
    w.borrow_mut().complete(host, token_id, &answer, ROOT);
}

/// Answers the stream's token request with `answer`, and any retry the filter sends with the
/// same, ticking the root context as Envoy would.
pub fn answer_every_try(
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
            answer_at_root(host, w, sent_before, call_answer.clone());
        }
    }
}

/// The upstream answers stream `id` with a continuous access evaluation challenge.
pub fn upstream_asks_for_more_claims(host: &FakeHost, filter: &mut RequestFilter, id: u32) {
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

/// Whether every shared-data read since `shared_reads` was cleared was the once-a-second look for
/// dropped tokens.
pub fn read_no_token_from_shared_data(host: &FakeHost) -> bool {
    let reads = host.shared_reads.borrow();
    reads.iter().all(|k| *k == crate::shared_data::DROPPED)
}
