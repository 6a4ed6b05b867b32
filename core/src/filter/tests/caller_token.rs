//! The caller's token, checked before any token request: missing, malformed, expired, for another
//! audience, issuer or tenant.

use crate::filter::Verdict;
use crate::testing::{
    jwt_with, jwt_with_claims, jwt_with_exp, request, request_from, worker, worker_with, FakeHost,
};

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
fn subject_tokens_failing_local_checks_are_401_without_a_token_request() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"require_audience": true}));
    let expired = jwt_with_exp(host.now.get() - 61, "alice");
    let other_audience = jwt_with(&format!(
        r#"{{"exp":{},"aud":"someone-else"}}"#,
        host.now.get() + 600
    ));
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
        let (_f, v) = request_from(&host, &w, id, token);
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

#[test]
fn foreign_issuers_tenants_and_tokens_without_exp_are_401_without_a_token_request() {
    let host = FakeHost::default();
    let ours = "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0";
    let tenant = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    let w = worker_with(serde_json::json!({
        "allowed_issuers": [ours],
        "allowed_tenants": [tenant]
    }));
    let no_exp = jwt_with(&format!(r#"{{"iss":"{ours}","tid":"{tenant}"}}"#));
    let other_tenant = "00000000-0000-0000-0000-000000000001";
    let claims = |claims: &str| jwt_with_claims(&host, claims);
    for (id, token, why) in [
        (
            10,
            claims(&format!(
                r#""iss":"https://evil.example/v2.0","tid":"{tenant}""#
            )),
            "issuer",
        ),
        (
            11,
            claims(&format!(r#""iss":"{ours}","tid":"{other_tenant}""#)),
            "tenant",
        ),
        (12, claims(&format!(r#""tid":"{tenant}""#)), "issuer"),
        (13, no_exp, "no expiry"),
    ] {
        let (_f, v) = request_from(&host, &w, id, &token);
        assert_eq!(v, Verdict::Pause, "{why}");
        let reply = host.stream(id).reply.unwrap();
        assert_eq!(reply.status, 401, "{why}");
        assert!(
            reply.header("www-authenticate").unwrap().contains(why),
            "{why}"
        );
    }
    assert!(host.dispatched.borrow().is_empty());
    let token = claims(&format!(
        r#""iss":"{ours}","tid":"{}""#,
        tenant.to_uppercase()
    ));
    let (_f, v) = request_from(&host, &w, 14, &token);
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        host.token_requests(),
        1,
        "our own tenant's token is exchanged"
    );
}

#[test]
fn audience_matching_the_client_id_is_exchanged() {
    let host = FakeHost::default();
    let w = worker_with(serde_json::json!({"require_audience": true}));
    let mine = jwt_with(&format!(
        r#"{{"exp":{},"aud":"client-1"}}"#,
        host.now.get() + 600
    ));
    assert_eq!(request_from(&host, &w, 10, &mine).1, Verdict::Pause);
    assert_eq!(host.token_requests(), 1);
}
