//! The other grants (client_credentials, token_exchange) beside on-behalf-of, and client
//! assertions signed with a private key instead of a client secret.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::Worker;
use crate::filter::Verdict;
use crate::metrics::Counter;
use crate::testing::{
    answer, assert_authorization, configured, fixture_answer, ok_answer, request, request_from,
    test_key, worker_with, FakeHost, ALICE, BEARER_U, BOB, SECRET, SUBJECT_1, U,
};

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
    answer(&host, &mut f, 0, ok_answer("app-token", 3600.into()));
    assert!(host.stream(10).resumed);
    assert_authorization(&host, 10, "Bearer app-token");
    // Any later request to the target, with or without a caller's token, shares that token.
    let (_f, verdict) = request(&host, &w, 11, "app.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 11, "Bearer app-token");
    assert_eq!(host.token_requests(), 1);
}

#[test]
fn client_credentials_target_keeps_or_refuses_an_existing_authorization_when_told() {
    let host = FakeHost::default();
    let w = worker_with_grants("keep");
    let (_f, verdict) = request(&host, &w, 10, "app.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 10, BEARER_U);
    assert!(host.dispatched.borrow().is_empty());
    let w = worker_with_grants("refuse");
    let (_f, verdict) = request(&host, &w, 11, "app.example.com", "/", Some(BEARER_U));
    assert_eq!(verdict, Verdict::Pause);
    assert_eq!(host.stream(11).reply.map(|r| r.status), Some(400));
    // Without one, both exchange as usual.
    request(&host, &w, 12, "app.example.com", "/", None);
    assert_eq!(host.token_requests(), 1);
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
    answer(&host, &mut f, 0, ok_answer("tx-token", 3600.into()));
    assert_authorization(&host, 10, "Bearer tx-token");
    // The same caller to the OBO target is a different token: a token request of its own.
    request_from(&host, &w, 11, U);
    assert_eq!(host.token_requests(), 2);
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
    let expired = fixture_answer(400, "error-invalid-grant-expired.json");
    answer(&host, &mut f, 0, expired);
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
    configured(serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_jwk": test_key::jwk(),
        "client_assertion": client_assertion,
        "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]
    }))
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
    let _alice = request_from(&host, &w, 10, ALICE);
    host.now.set(host.now.get() + 29);
    let (mut bob, _) = request_from(&host, &w, 11, BOB);
    let sent = assertions_sent(&host);
    assert!(!sent[0].is_empty());
    assert_eq!(sent[1], sent[0], "signed again within reuse_s");
    // An invalid_client answer may be the assertion's fault: the next request signs anew.
    let invalid_client = fixture_answer(401, "error-invalid-client.json");
    answer(&host, &mut bob, 1, invalid_client);
    let _u = request_from(&host, &w, 12, U);
    let sent = assertions_sent(&host);
    assert_ne!(sent[2], sent[1]);
    host.now.set(host.now.get() + 30);
    let _s = request_from(&host, &w, 13, SUBJECT_1);
    let sent = assertions_sent(&host);
    assert_ne!(sent[3], sent[2], "sent again after reuse_s");
    assert_eq!(host.counted(Counter::ClientAssertionsSigned), 3);
}

#[test]
fn with_reuse_s_0_every_token_request_carries_a_new_assertion() {
    let host = FakeHost::default();
    let w = worker_with_private_key(serde_json::json!({"reuse_s": 0}));
    for (id, user) in [(10, ALICE), (11, BOB), (12, U)] {
        request_from(&host, &w, id, user);
    }
    let sent: std::collections::HashSet<String> = assertions_sent(&host).into_iter().collect();
    assert_eq!(sent.len(), 3);
    assert_eq!(host.counted(Counter::ClientAssertionsSigned), 3);
}
