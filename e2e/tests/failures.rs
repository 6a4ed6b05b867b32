//! Every way an exchange can fail, end to end: the status the caller gets, what the IdP received,
//! and that the subject token never reached the upstream.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use obo_e2e::client::{bearer, Response};
use obo_e2e::mock_idp::Behaviour;
use obo_e2e::stack::Stack;
use obo_e2e::user_token;
use serde_json::json;

/// Sends one request for alice through a stack whose IdP behaves as told; checks that nothing
/// reached the upstream and returns the answer and the stack.
fn refused(extra: serde_json::Value, behaviour: Behaviour) -> (Response, Stack) {
    let s = Stack::start(extra);
    s.idp.set(behaviour);
    let subject = user_token("alice");
    let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
    assert!(
        s.upstream.seen().is_empty(),
        "upstream was reached: {:?}",
        s.upstream.seen()
    );
    s.upstream.assert_never_saw(&subject);
    (r, s)
}

fn answer(status: u16, body: &[u8]) -> Behaviour {
    Behaviour::Answer {
        status,
        body: body.to_vec(),
        headers: vec![],
    }
}

#[test]
fn missing_authorization_is_401_invalid_token_without_an_exchange() {
    let s = Stack::start(json!({}));
    let r = s.get("api.example.com", "/", None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer error=\"invalid_token\"")
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.json()["error"], "invalid_token");
    assert_eq!(s.idp.count(), 0);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn non_bearer_and_empty_tokens_are_401_without_an_exchange() {
    let s = Stack::start(json!({}));
    for auth in ["Basic YWxpY2U6cHc=", "Bearer", "Bearer    ", "Token abc"] {
        let r = s.get("api.example.com", "/", Some(auth));
        assert_eq!(r.status, 401, "{auth}");
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer error=\"invalid_token\""),
            "{auth}"
        );
    }
    assert_eq!(s.idp.count(), 0);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn invalid_grant_is_401_invalid_token_with_the_idps_description() {
    let (r, s) = refused(
        json!({}),
        Behaviour::fixture(400, "error-invalid-grant-expired.json"),
    );
    assert_eq!(r.status, 401);
    let www = r.header("www-authenticate").unwrap();
    assert!(
        www.starts_with("Bearer error=\"invalid_token\", error_description=\"AADSTS500133:"),
        "{www}"
    );
    let body = r.json();
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(body["error_codes"], json!([500133]));
    assert_eq!(body["trace_id"], "0b5e6a4e-1b2c-4d3e-9f00-1a2b3c4d5e6f");
    assert_eq!(
        body["correlation_id"],
        "7c8d9e0f-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
    );
    assert_eq!(s.idp.count(), 1);
}

#[test]
fn interaction_required_is_401_insufficient_claims_with_the_challenge() {
    let (r, _s) = refused(
        json!({}),
        Behaviour::fixture(400, "error-interaction-required.json"),
    );
    assert_eq!(r.status, 401);
    let claims = r#"{"access_token":{"polids":{"essential":true,"values":["9ab03e19-ed42-4168-b6b7-7001fb3e933a"]}}}"#;
    assert_eq!(
        r.header("www-authenticate"),
        Some(
            format!(
                "Bearer error=\"insufficient_claims\", claims=\"{}\"",
                STANDARD.encode(claims)
            )
            .as_str()
        )
    );
    assert_eq!(r.json()["error"], "interaction_required");
    assert_eq!(r.json()["error_codes"], json!([50079]));
}

#[test]
fn consent_required_is_401_and_keeps_its_suberror() {
    let (r, _s) = refused(
        json!({}),
        Behaviour::fixture(400, "error-consent-required.json"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["suberror"], "consent_required");
}

#[test]
fn throttling_is_503_with_the_idps_retry_after() {
    let behaviour = Behaviour::Answer {
        status: 429,
        body: obo_e2e::fixture("error-throttled.json"),
        headers: vec![("Retry-After".into(), "60".into())],
    };
    let (r, _s) = refused(json!({}), behaviour);
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("60"));
    assert_eq!(r.json()["error_codes"], json!([90055]));
}

#[test]
fn idp_server_error_is_502_after_one_retry() {
    let (r, s) = refused(json!({}), answer(500, b"Internal Server Error"));
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "server_error");
    assert_eq!(s.idp.count(), 2);
}

#[test]
fn idp_temporarily_unavailable_is_503() {
    let (r, _s) = refused(
        json!({}),
        Behaviour::fixture(503, "error-temporarily-unavailable.json"),
    );
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert_eq!(r.json()["error_codes"], json!([90033]));
}

#[test]
fn invalid_client_is_502_with_the_idps_error() {
    let (r, _s) = refused(
        json!({}),
        Behaviour::fixture(401, "error-invalid-client.json"),
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"], "invalid_client");
}

#[test]
fn invalid_scope_is_502() {
    let (r, _s) = refused(
        json!({}),
        Behaviour::fixture(400, "error-invalid-scope.json"),
    );
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error_codes"], json!([500011]));
}

#[test]
fn success_status_with_a_body_that_is_not_json_is_502() {
    let (r, _s) = refused(json!({}), answer(200, b"<html>login</html>"));
    assert_eq!(r.status, 502);
}

#[test]
fn success_without_access_token_is_502() {
    let (r, _s) = refused(
        json!({}),
        answer(200, br#"{"token_type":"Bearer","expires_in":3599}"#),
    );
    assert_eq!(r.status, 502);
}

#[test]
fn no_answer_within_token_timeout_is_504() {
    let slow = Behaviour::Delay(Duration::from_millis(1500), Box::new(Behaviour::issue()));
    let (r, s) = refused(json!({"token_timeout_ms": 200}), slow);
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"], "temporarily_unavailable");
    assert_eq!(s.idp.count(), 1);
}

#[test]
fn unreachable_token_cluster_is_503() {
    let s = Stack::start_with(json!({}), |opts| {
        // Port 1: nothing listens there. (A port bound and released could be taken by another
        // test's server in the meantime.)
        opts.idp_port = Some(1);
    });
    let subject = user_token("alice");
    let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn token_cluster_without_endpoints_is_503() {
    let s = Stack::start_with(json!({}), |opts| opts.idp_port = None);
    let r = s.get("api.example.com", "/", Some(&bearer(&user_token("alice"))));
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn token_cluster_that_does_not_exist_is_503() {
    let (r, s) = refused(
        json!({"token_cluster": "no_such_cluster"}),
        Behaviour::issue(),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(s.idp.count(), 0);
}

#[test]
fn failed_exchange_is_not_cached() {
    let (r, s) = refused(
        json!({}),
        Behaviour::fixture(401, "error-invalid-client.json"),
    );
    assert_eq!(r.status, 502);
    s.idp.set(Behaviour::issue());
    let r = s.get("api.example.com", "/", Some(&bearer(&user_token("alice"))));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.idp.count(), 2);
}

#[test]
fn two_authorization_headers_are_401_and_neither_token_leaves() {
    let s = Stack::start(json!({}));
    let (alice, bob) = (user_token("alice"), user_token("bob"));
    let (a, b) = (bearer(&alice), bearer(&bob));
    let r = obo_e2e::client::get_with(
        s.envoy.port,
        "api.example.com",
        "/",
        &[("authorization", &a), ("authorization", &b)],
    );
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(s.idp.count(), 0);
    assert!(s.upstream.seen().is_empty());
}
