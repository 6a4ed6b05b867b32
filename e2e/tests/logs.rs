//! No line the filter logs, at any level, holds the client secret, a subject token or an issued
//! token: Envoy runs at debug level through every path the filter can take.

use std::time::Duration;

use obo_e2e::client::bearer;
use obo_e2e::envoy::Build;
use obo_e2e::mock_idp::{obo_token_for, Behaviour, CLIENT_SECRET};
use obo_e2e::stack::{Stack, API_SCOPE, OTHER_SCOPE};
use obo_e2e::{fixture, user_token};
use serde_json::json;

#[test]
fn no_filter_log_line_holds_a_secret_or_a_token() {
    let s = Stack::start_with(
        json!({"token_timeout_ms": 300, "unmatched": "deny"}),
        |opts| {
            opts.wasm_log_level = "trace";
        },
    );
    let answer = |status: u16, body: &[u8]| Behaviour::Answer {
        status,
        body: body.to_vec(),
        headers: vec![],
    };
    let throttled = Behaviour::Answer {
        status: 429,
        body: fixture("error-throttled.json"),
        headers: vec![("Retry-After".into(), "30".into())],
    };
    let behaviours = vec![
        Behaviour::issue(),
        Behaviour::Issue {
            expires_in: json!("3599"),
        },
        Behaviour::fixture(400, "error-invalid-grant-expired.json"),
        Behaviour::fixture(400, "error-invalid-grant-signature.json"),
        Behaviour::fixture(400, "error-interaction-required.json"),
        Behaviour::fixture(400, "error-consent-required.json"),
        Behaviour::fixture(401, "error-invalid-client.json"),
        Behaviour::fixture(400, "error-invalid-scope.json"),
        Behaviour::fixture(503, "error-temporarily-unavailable.json"),
        throttled,
        answer(500, b"boom"),
        answer(200, b"not json"),
        answer(200, br#"{"expires_in": 10}"#),
        Behaviour::Delay(Duration::from_millis(800), Box::new(Behaviour::issue())),
    ];
    let mut subjects = Vec::new();
    let mut issued = Vec::new();
    for (i, behaviour) in behaviours.into_iter().enumerate() {
        s.idp.set(behaviour);
        let subject = user_token(&format!("user-{i}"));
        for (authority, path, scope) in [
            ("api.example.com", "/", API_SCOPE),
            ("x.team.svc.cluster.local", "/v2/", OTHER_SCOPE),
        ] {
            s.get(authority, path, Some(&bearer(&subject)));
            issued.push(obo_token_for(&subject, scope));
        }
        subjects.push(subject);
    }
    // Local refusals: no token, another scheme, an unmatched host, not a JWT, expired; and the
    // remembered invalid_grant of user-2.
    s.get("api.example.com", "/", None);
    s.get("api.example.com", "/", Some("Basic dXNlcjpwYXNz"));
    s.get("unknown.example.com", "/", Some(&bearer(&subjects[0])));
    s.get(
        "api.example.com",
        "/",
        Some("Bearer not-a-jwt-but-a-secretive-opaque-token"),
    );
    let expired = obo_e2e::subject_token("expired-user", obo_e2e::now() - 600);
    s.get("api.example.com", "/", Some(&bearer(&expired)));
    s.get("api.example.com", "/", Some(&bearer(&subjects[2])));
    subjects.push(expired);
    subjects.push("not-a-jwt-but-a-secretive-opaque-token".into());

    let lines = s.envoy.filter_log_lines();
    assert!(
        lines.iter().any(|l| l.contains("trace_id=")),
        "failures were logged with their trace id"
    );
    assert!(
        lines.iter().any(|l| l.contains("token exchanged")),
        "successes were logged"
    );
    for line in &lines {
        assert!(!line.contains(CLIENT_SECRET), "client secret in: {line}");
        for t in subjects.iter().chain(&issued) {
            for part in t.split('.').filter(|p| p.len() >= 16) {
                assert!(!line.contains(part), "token in: {line}");
            }
        }
    }
}

#[test]
fn failed_exchange_is_logged_with_the_idps_ids_the_target_and_the_request_id() {
    let s = Stack::start(json!({}));
    s.idp
        .set(Behaviour::fixture(400, "error-invalid-grant-expired.json"));
    let subject = user_token("alice");
    let auth = bearer(&subject);
    let r = obo_e2e::client::get_with(
        s.envoy.port,
        "api.example.com",
        "/",
        &[("authorization", &auth), ("x-request-id", "req-7f3a")],
    );
    assert_eq!(r.status, 401);
    let lines = s.envoy.filter_log_lines();
    let line = lines
        .iter()
        .find(|l| l.contains("token exchange failed"))
        .unwrap_or_else(|| panic!("no failed-exchange line in:\n{}", lines.join("\n")));
    for part in [
        &format!("scope={API_SCOPE}"),
        "host=api.example.com",
        "request_id=req-7f3a",
        "error=invalid_grant",
        "error_codes=[500133]",
        "trace_id=0b5e6a4e-1b2c-4d3e-9f00-1a2b3c4d5e6f",
        "correlation_id=7c8d9e0f-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
    ] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(!line.contains(&subject) && !line.contains(CLIENT_SECRET));
}

#[test]
fn each_filter_line_names_the_filter_once() {
    let s = obo_e2e::stack::Stack::start(json!({}));
    let r = s.get("api.example.com", "/", None);
    assert_eq!(r.status, 401);
    let lines = s.envoy.filter_log_lines();
    let refused = lines
        .iter()
        .find(|l| l.contains("request refused"))
        .unwrap_or_else(|| panic!("no refusal logged: {lines:?}"));
    // Envoy names a Wasm filter's lines by its vm_id; the native module names itself, in the
    // `dynamic_modules` component's lines (after a source location that differs by version).
    let prefix = match Build::under_test() {
        Build::Wasm => "wasm log entra_obo: ",
        Build::Native => "] entra_obo: ",
    };
    let says = format!("{prefix}request refused: it carries no bearer token");
    assert!(refused.contains(&says), "{refused}");
    assert_eq!(refused.matches("entra_obo").count(), 1, "{refused}");
}
