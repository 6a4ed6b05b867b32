//! The on-behalf-of exchange end to end: the real Envoy, the real filter, a mock Entra ID.

use obo_e2e::client::bearer;
use obo_e2e::envoy::{Build, Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, Behaviour, MockIdp, CLIENT_ID, CLIENT_SECRET};
use obo_e2e::stack::{Stack, API_SCOPE, OTHER_SCOPE};
use obo_e2e::upstream::Upstream;
use obo_e2e::user_token;
use serde_json::json;

/// The module does not export the body callbacks, so Envoy streams a body past the VM; a body
/// that arrives while the request waits for its exchange is held and then forwarded whole.
#[test]
fn request_body_reaches_the_upstream_whole_with_the_obo_token() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    // 1 MiB: many chunks, more than Envoy's default buffer before flow control.
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i % 251) as u8).collect();
    for round in ["cold cache", "warm cache"] {
        let r = s.post("api.example.com", "/orders", Some(&bearer(&subject)), &body);
        assert_eq!(r.status, 200, "{round}: {}", r.body);
    }
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 2);
    for request in &seen {
        assert_eq!(request.body.len(), body.len());
        assert!(request.body == body, "the body arrived changed");
        assert_eq!(
            request.authorization,
            vec![bearer(&obo_token_for(&subject, API_SCOPE))]
        );
    }
    assert_eq!(s.idp.requests().len(), 1);
}

#[test]
fn subject_token_is_swapped_for_an_obo_token() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    let r = s.get("api.example.com", "/orders", Some(&bearer(&subject)));
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
    assert_eq!(seen[0].path, "/orders");
    s.idp.assert_protocol_followed();
    let req = &s.idp.requests()[0];
    assert_eq!(req.field("assertion"), Some(subject.as_str()));
    assert_eq!(req.field("scope"), Some(API_SCOPE));
    assert_eq!(
        req.host.as_deref(),
        Some(format!("127.0.0.1:{}", s.idp.port).as_str())
    );
}

/// The Wasm build: Envoy matches the route again after the filter sets `Authorization` (it does so
/// after any Wasm filter changes a request header), so a route chosen by the caller's token is not
/// the one the request takes. The native build does not have Envoy match again: the request keeps
/// the route it came with, whose cluster the filter checked. docs/deployment.md, "Routing and the
/// new token".
#[test]
fn a_route_matching_the_callers_token_is_matched_again_only_by_the_wasm_build() {
    let subject = user_token("alice");
    let routed_on_subject = bearer(&subject);
    let s = Stack::start_with(json!({}), move |o| {
        o.bootstrap_patch = Some(Box::new(move |bootstrap: &mut serde_json::Value| {
            let routes = &mut bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
            routes.as_array_mut().unwrap().insert(
                0,
                json!({
                    "match": {"prefix": "/", "headers": [{
                        "name": "authorization",
                        "string_match": {"exact": routed_on_subject}
                    }]},
                    "direct_response": {"status": 418, "body": {"inline_string": "routed on the subject token"}}
                }),
            );
        }));
    });
    let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
    match Build::under_test() {
        Build::Wasm => {
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(
                s.upstream.seen()[0].authorization,
                vec![bearer(&obo_token_for(&subject, API_SCOPE))]
            );
        }
        Build::Native => {
            assert_eq!(r.status, 418, "{}", r.body);
            assert!(s.upstream.seen().is_empty());
        }
    }
}

#[test]
fn expires_in_as_a_string_is_accepted_and_cached() {
    let s = Stack::start(json!({}));
    s.idp.set(Behaviour::Issue {
        expires_in: json!("3599"),
    });
    let subject = user_token("alice");
    for _ in 0..3 {
        assert_eq!(
            s.get("api.example.com", "/", Some(&bearer(&subject)))
                .status,
            200
        );
    }
    assert_eq!(s.idp.count(), 1);
    assert!(s
        .upstream
        .seen()
        .iter()
        .all(|x| x.authorization == vec![bearer(&obo_token_for(&subject, API_SCOPE))]));
}

#[test]
fn scheme_is_case_insensitive() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    let r = s.get("api.example.com", "/", Some(&format!("bEaReR {subject}")));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.upstream.seen()[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
}

#[test]
fn host_matching_ignores_case() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    assert_eq!(
        s.get("API.Example.COM", "/", Some(&bearer(&subject)))
            .status,
        200
    );
    assert_eq!(
        s.upstream.seen()[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
}

#[test]
fn wildcard_target_with_path_prefix_uses_its_own_scope() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    let r = s.get(
        "orders.team.svc.cluster.local",
        "/v2/items",
        Some(&bearer(&subject)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.upstream.seen()[0].authorization,
        vec![bearer(&obo_token_for(&subject, OTHER_SCOPE))]
    );
    assert_eq!(s.idp.requests()[0].field("scope"), Some(OTHER_SCOPE));
}

#[test]
fn unmatched_requests_go_on_without_authorization_by_default() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    // Another host, another port, the bare domain of a wildcard, a path outside the prefix.
    for (authority, path) in [
        ("other.example.com", "/"),
        ("api.example.com:8443", "/"),
        ("team.svc.cluster.local", "/v2/x"),
        ("orders.team.svc.cluster.local", "/v1/x"),
    ] {
        assert_eq!(s.get(authority, path, Some(&bearer(&subject))).status, 200);
    }
    assert_eq!(s.idp.count(), 0);
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 4);
    assert!(seen.iter().all(|x| x.authorization.is_empty()), "{seen:?}");
    assert_eq!(
        s.envoy
            .obo_counter_once("obo_requests_unmatched_stripped", 4),
        4
    );
}

#[test]
fn unmatched_requests_pass_untouched_when_told_to_pass_through() {
    let s = Stack::start(json!({"unmatched": "passthrough"}));
    let subject = user_token("alice");
    // Another host, the bare domain of a wildcard, and a path outside the prefix.
    for (authority, path) in [
        ("other.example.com", "/"),
        ("team.svc.cluster.local", "/v2/x"),
        ("orders.team.svc.cluster.local", "/v1/x"),
    ] {
        assert_eq!(s.get(authority, path, Some(&bearer(&subject))).status, 200);
    }
    assert_eq!(s.idp.count(), 0);
    assert!(s
        .upstream
        .seen()
        .iter()
        .all(|x| x.authorization == vec![bearer(&subject)]));
}

#[test]
fn unmatched_requests_are_403_when_configured_to_deny() {
    let s = Stack::start(json!({"unmatched": "deny"}));
    let r = s.get(
        "other.example.com",
        "/",
        Some(&bearer(&user_token("alice"))),
    );
    assert_eq!(r.status, 403);
    assert_eq!(r.json()["error"], "access_denied");
    assert!(s.upstream.seen().is_empty());
    assert_eq!(s.idp.count(), 0);
}

#[test]
fn endpoint_and_client_credentials_default_to_the_environment() {
    let idp = MockIdp::start();
    let upstream = Upstream::start();
    let config = json!({
        "token_cluster": "entra_id",
        "targets": [{"host": "api.example.com", "scope": API_SCOPE}]
    });
    let mut opts = EnvoyOptions::new(&config, idp.port, upstream.port);
    opts.vm_env = vec![
        ("AZURE_OPENID_CONFIG_TOKEN_ENDPOINT".into(), idp.endpoint()),
        ("AZURE_APP_CLIENT_ID".into(), CLIENT_ID.into()),
        ("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
    ];
    let envoy = Envoy::start(opts);
    let subject = user_token("alice");
    let r = obo_e2e::client::get(envoy.port, "api.example.com", "/", Some(&bearer(&subject)));
    assert_eq!(r.status, 200, "{}", r.body);
    idp.assert_protocol_followed();
    assert_eq!(
        upstream.seen()[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
}
