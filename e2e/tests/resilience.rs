//! A flapping, throttling or broken IdP and hostile subject tokens, end to end: for each, the
//! status the caller gets, the token requests the IdP received, and that the upstream never saw
//! a subject token.

use std::time::Duration;

use obo_e2e::client::bearer;
use obo_e2e::mock_idp::{obo_token_for, Behaviour};
use obo_e2e::raw_idp::{Fault, RawIdp};
use obo_e2e::stack::{Stack, API_SCOPE, OTHER_SCOPE};
use obo_e2e::upstream::{CLAIMS_CHALLENGE, CLAIMS_CHALLENGE_PATH};
use obo_e2e::{now, subject_token, user_token};
use serde_json::json;

fn answer(status: u16, body: &[u8]) -> Behaviour {
    Behaviour::Answer {
        status,
        body: body.to_vec(),
        headers: vec![],
    }
}

fn throttled(retry_after: &str) -> Behaviour {
    Behaviour::Answer {
        status: 429,
        body: obo_e2e::fixture("error-throttled.json"),
        headers: vec![("Retry-After".into(), retry_after.into())],
    }
}

#[test]
fn server_error_then_success_is_one_retry_and_a_200() {
    let s = Stack::start(json!({}));
    s.idp.set(Behaviour::Cycle(vec![
        answer(500, b"boom"),
        Behaviour::issue(),
    ]));
    let subject = user_token("alice");
    let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.idp.count(), 2);
    assert_eq!(
        s.upstream.seen()[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
}

#[test]
fn flapping_idp_never_lets_a_subject_token_through() {
    let s = Stack::start(json!({"backoff": {"default_s": 0}}));
    s.idp.set(Behaviour::Cycle(vec![
        answer(500, b"boom"),
        answer(500, b"boom"),
        Behaviour::issue(),
    ]));
    let mut subjects = Vec::new();
    for i in 0..9 {
        let subject = user_token(&format!("user-{i}"));
        let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
        assert!(
            r.status == 200 || r.status == 502,
            "{} {}",
            r.status,
            r.body
        );
        subjects.push(subject);
    }
    for subject in &subjects {
        s.upstream.assert_never_saw(subject);
    }
    let seen = s.upstream.seen();
    assert!(
        !seen.is_empty(),
        "some requests got through on the successful turns"
    );
    for x in &seen {
        assert!(subjects
            .iter()
            .any(|sub| x.authorization == vec![bearer(&obo_token_for(sub, API_SCOPE))]));
    }
}

#[test]
fn throttled_scope_fails_fast_until_retry_after_has_passed() {
    let s = Stack::start(json!({}));
    let alice = user_token("alice");
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&alice))).status,
        200
    );
    s.idp.set(throttled("2"));
    let bob = user_token("bob");
    let r = s.get("api.example.com", "/", Some(&bearer(&bob)));
    assert_eq!((r.status, r.header("retry-after")), (503, Some("2")));
    assert_eq!(s.idp.count(), 2, "429 is not retried");
    s.idp.set(Behaviour::issue());
    // While the wait lasts: new exchanges for the scope are refused without a token request ...
    for who in ["bob", "carol"] {
        let r = s.get("api.example.com", "/", Some(&bearer(&user_token(who))));
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(r.header("retry-after").is_some());
    }
    assert_eq!(s.idp.count(), 2);
    // ... cached tokens are still served, and other scopes still exchange.
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&alice))).status,
        200
    );
    assert_eq!(
        s.get("x.team.svc.cluster.local", "/v2/", Some(&bearer(&bob)))
            .status,
        200
    );
    assert_eq!(s.idp.count(), 3);
    std::thread::sleep(Duration::from_millis(2100));
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&bob))).status,
        200
    );
    assert_eq!(s.idp.count(), 4);
    s.upstream.assert_never_saw(&bob);
    let _ = OTHER_SCOPE;
}

/// Entra ID answers the same subject token with the same challenge until the user steps up and
/// brings a new one, so the answer is remembered like an `invalid_grant`.
#[test]
fn a_user_who_must_step_up_costs_the_idp_one_request_not_one_per_retry() {
    let s = Stack::start(json!({"negative_cache_s": 5}));
    s.idp
        .set(Behaviour::fixture(400, "error-interaction-required.json"));
    let subject = bearer(&user_token("alice"));
    let first = s.get("api.example.com", "/", Some(&subject));
    assert_eq!(first.status, 401);
    let challenge = first.header("www-authenticate").unwrap().to_string();
    assert!(challenge.contains("insufficient_claims") && challenge.contains("claims="));
    for _ in 0..9 {
        let r = s.get("api.example.com", "/", Some(&subject));
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(challenge.as_str()));
        assert_eq!(r.json()["error_codes"], json!([50079]));
    }
    assert_eq!(s.idp.count(), 1);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn invalid_grant_costs_the_idp_one_request_not_one_per_retry() {
    let s = Stack::start(json!({"negative_cache_s": 5}));
    s.idp
        .set(Behaviour::fixture(400, "error-invalid-grant-expired.json"));
    let dead = user_token("revoked-user");
    for _ in 0..10 {
        let r = s.get("api.example.com", "/", Some(&bearer(&dead)));
        assert_eq!(r.status, 401);
        assert_eq!(r.json()["error_codes"], json!([500133]));
    }
    assert_eq!(s.idp.count(), 1);
    // Another user is not affected.
    s.idp.set(Behaviour::issue());
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&user_token("alice"))))
            .status,
        200
    );
    assert_eq!(s.idp.count(), 2);
    assert!(s
        .upstream
        .seen()
        .iter()
        .all(|x| !x.authorization.iter().any(|a| a.contains(&dead))));
}

#[test]
fn upstream_claims_challenge_drops_the_cached_token_and_passes_unchanged() {
    // One worker: the next test shows the drop reaching the others.
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 1);
    let subject = user_token("alice");
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&subject)))
            .status,
        200
    );
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&subject)))
            .status,
        200
    );
    assert_eq!(s.idp.count(), 1);
    let r = s.get(
        "api.example.com",
        CLAIMS_CHALLENGE_PATH,
        Some(&bearer(&subject)),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some(CLAIMS_CHALLENGE));
    assert!(
        r.body.contains(CLAIMS_CHALLENGE_PATH),
        "the upstream's own body: {}",
        r.body
    );
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&subject)))
            .status,
        200
    );
    assert_eq!(s.idp.count(), 2, "the next request exchanged again");
}

/// An upstream that keeps challenging (it wants an authentication context the user has not met):
/// the token is dropped once, and the one after it is kept for `cache.claims_challenge_holdoff_s`,
/// so the user's requests do not each become a token request.
#[test]
fn an_upstream_that_keeps_challenging_costs_one_new_token_per_holdoff() {
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 1);
    let subject = bearer(&user_token("alice"));
    for _ in 0..6 {
        let r = s.get("api.example.com", CLAIMS_CHALLENGE_PATH, Some(&subject));
        assert_eq!(r.status, 401);
        assert_eq!(r.header("www-authenticate"), Some(CLAIMS_CHALLENGE));
    }
    assert_eq!(
        s.envoy
            .obo_counter_once("obo_upstream_claims_challenges_kept", 5),
        5,
        "every challenge after the first kept its token"
    );
    assert_eq!(
        s.envoy
            .obo_counter_once("obo_upstream_claims_challenges", 1),
        1
    );
    assert_eq!(
        s.idp.count(),
        2,
        "the first token, and one more after its drop"
    );
}

#[test]
fn a_claims_challenge_on_one_worker_stops_the_token_on_every_worker_within_a_second() {
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 2);
    let subject = bearer(&user_token("alice"));
    // Each request comes on a connection of its own, so both workers serve the token from their
    // own caches.
    for _ in 0..20 {
        assert_eq!(s.get("api.example.com", "/", Some(&subject)).status, 200);
    }
    assert_eq!(s.idp.count(), 1);
    let dropped = s.upstream.seen()[0].authorization.clone();
    let r = s.get("api.example.com", CLAIMS_CHALLENGE_PATH, Some(&subject));
    assert_eq!(r.status, 401);
    // The IdP's next token differs from the dropped one, so the upstream shows which it got.
    s.idp.set(Behaviour::IssueSized(dropped[0].len() + 16));
    std::thread::sleep(Duration::from_millis(1_500));
    let before = s.upstream.seen().len();
    for _ in 0..20 {
        assert_eq!(s.get("api.example.com", "/", Some(&subject)).status, 200);
    }
    assert_eq!(s.idp.count(), 2, "one exchange for the new token");
    let sent: Vec<String> = s.upstream.seen()[before..]
        .iter()
        .flat_map(|seen| seen.authorization.clone())
        .collect();
    assert_eq!(sent.len(), 20);
    assert!(
        sent.iter().all(|a| !dropped.contains(a)),
        "a worker still sent the dropped token"
    );
}

#[test]
fn a_claims_challenge_for_one_user_leaves_the_other_users_in_the_workers_own_cache() {
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 1);
    let (alice, bob) = (bearer(&user_token("alice")), bearer(&user_token("bob")));
    for user in [&alice, &bob] {
        assert_eq!(s.get("api.example.com", "/", Some(user)).status, 200);
    }
    let r = s.get("api.example.com", CLAIMS_CHALLENGE_PATH, Some(&alice));
    assert_eq!(r.status, 401);
    assert_eq!(
        s.envoy
            .obo_counter_once("obo_upstream_claims_challenges", 1),
        1
    );
    // The worker looks for drops at most once a second: this request is after its next look.
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(s.get("api.example.com", "/", Some(&bob)).status, 200);
    assert_eq!(s.envoy.obo_counter_once("obo_cache_hits", 2), 2);
    assert_eq!(
        s.envoy.obo_counter_once("obo_cache_hits_shared", 0),
        0,
        "Bob's token came from the worker's front cache, not the shared one"
    );
    assert_eq!(s.get("api.example.com", "/", Some(&alice)).status, 200);
    assert_eq!(s.idp.count(), 3, "Alice's token was exchanged again");
}

#[test]
fn subject_tokens_failing_local_checks_never_reach_the_idp() {
    let s = Stack::start(json!({"require_audience": true}));
    let expired = subject_token("alice", now() - 120);
    let huge = format!("{}{}", user_token("alice"), "A".repeat(17 * 1024));
    for (token, why) in [
        ("not-a-jwt-at-all", "not a JWT"),
        (expired.as_str(), "expired"),
        (huge.as_str(), "too large"),
    ] {
        let r = s.get("api.example.com", "/", Some(&bearer(token)));
        assert_eq!(r.status, 401, "{why}: {}", r.body);
        assert!(r.header("www-authenticate").unwrap().contains(why), "{why}");
    }
    assert_eq!(s.idp.count(), 0);
    assert!(s.upstream.seen().is_empty());
    // The suite's tokens carry the client id as audience, so they pass.
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&user_token("bob"))))
            .status,
        200
    );
}

#[test]
fn idp_that_closes_the_connection_is_503_after_one_retry() {
    let raw = RawIdp::start(Fault::Close);
    let s = Stack::start_with(json!({}), |opts| opts.idp_port = Some(raw.port));
    let subject = user_token("alice");
    let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(raw.count(), 2);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn truncated_token_response_is_refused() {
    let raw = RawIdp::start(Fault::Truncate);
    let s = Stack::start_with(json!({}), |opts| opts.idp_port = Some(raw.port));
    let r = s.get("api.example.com", "/", Some(&bearer(&user_token("alice"))));
    assert!(
        r.status == 502 || r.status == 503,
        "{} {}",
        r.status,
        r.body
    );
    // A reset mid-body: retried once, then 503.
    assert_eq!((r.status, raw.count()), (503, 2), "{}", r.body);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn ten_megabyte_token_response_is_refused() {
    let s = Stack::start(json!({}));
    let mut body = br#"{"access_token":""#.to_vec();
    body.extend(std::iter::repeat_n(b'a', 10 * 1024 * 1024));
    body.extend_from_slice(br#"","expires_in":3599}"#);
    s.idp.set(answer(200, &body));
    let r = s.get("api.example.com", "/", Some(&bearer(&user_token("alice"))));
    assert_eq!((r.status, s.idp.count()), (502, 1), "{}", r.body);
    assert_eq!(r.json()["error_description"], "token response is too large");
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn invalid_utf8_token_response_is_502() {
    let s = Stack::start(json!({}));
    s.idp.set(answer(
        200,
        b"{\"access_token\":\"\xff\xfe\",\"expires_in\":3599}",
    ));
    let r = s.get("api.example.com", "/", Some(&bearer(&user_token("alice"))));
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(s.idp.count(), 1);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn stalled_idp_is_504_within_the_timeout_and_not_retried_past_it() {
    let s = Stack::start(json!({"token_timeout_ms": 400}));
    s.idp.set(Behaviour::Delay(
        Duration::from_secs(5),
        Box::new(Behaviour::issue()),
    ));
    let started = std::time::Instant::now();
    let r = s.get("api.example.com", "/", Some(&bearer(&user_token("alice"))));
    assert_eq!(r.status, 504, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(s.idp.count(), 1);
    assert!(s.upstream.seen().is_empty());
}

/// Sends raw bytes as one HTTP/1.1 request and returns the status line of the answer.
fn raw_request(port: u16, request: &[u8]) -> String {
    use std::io::{BufRead, BufReader, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(request).unwrap();
    let mut line = String::new();
    let _ = BufReader::new(stream).read_line(&mut line);
    line.trim_end().to_string()
}

#[test]
fn authorization_that_is_not_utf8_is_refused_and_the_filter_survives() {
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 1);
    let request = b"GET / HTTP/1.1\r\nhost: api.example.com\r\nauthorization: Bearer abc\xff\xfedef\r\nconnection: close\r\n\r\n";
    let status_line = raw_request(s.envoy.port, request);
    assert!(status_line.starts_with("HTTP/1.1 401"), "{status_line}");
    assert_eq!(s.idp.count(), 0);
    // The same worker still exchanges tokens: its VM did not die.
    let subject = user_token("alice");
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&subject)))
            .status,
        200
    );
    assert!(!s.envoy.log().contains("panicked"), "the filter panicked");
}
