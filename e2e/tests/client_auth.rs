//! Client authentication with a private key (`private_key_jwt`), as NAIS gives applications an
//! `AZURE_APP_JWK`: token requests carry an assertion signed with the key, which the mock token
//! endpoint verifies (signature, header, claims). Like Entra ID, it accepts one assertion until
//! its `exp`, so a worker sends it again for `client_assertion.reuse_s`; told to, it refuses a
//! repeated `jti`, as Keycloak does.

use obo_e2e::client::bearer;
use obo_e2e::client_key::client_key;
use obo_e2e::envoy::{Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, MockIdp, CLIENT_SECRET};
use obo_e2e::stack::{plugin_config, API_SCOPE};
use obo_e2e::upstream::Upstream;
use obo_e2e::user_token;
use serde_json::{json, Value};

struct World {
    idp: MockIdp,
    upstream: Upstream,
    envoy: Envoy,
}

/// The filter with no client secret configured and the key in `AZURE_APP_JWK` (and, to show
/// which wins, the secret in `AZURE_APP_CLIENT_SECRET` too).
fn with_private_key(extra: Value, audience: Option<&str>) -> World {
    with_private_key_at(MockIdp::start(), extra, audience)
}

fn with_private_key_at(idp: MockIdp, extra: Value, audience: Option<&str>) -> World {
    let upstream = Upstream::start();
    let mut config = plugin_config(&idp, &extra);
    config.as_object_mut().unwrap().remove("client_secret");
    idp.expect_private_key(
        client_key().public.clone(),
        audience.unwrap_or(&idp.endpoint()),
    );
    let mut opts = EnvoyOptions::new(&config, idp.port, upstream.port);
    // One worker: each worker keeps its own last assertion.
    opts.concurrency = 1;
    opts.vm_env = vec![
        ("AZURE_APP_JWK".into(), client_key().jwk.clone()),
        ("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
    ];
    let envoy = Envoy::start(opts);
    World {
        idp,
        upstream,
        envoy,
    }
}

fn call(w: &World, user: &str) -> (u16, String) {
    let subject = user_token(user);
    let r = obo_e2e::client::get(
        w.envoy.port,
        "api.example.com",
        "/",
        Some(&bearer(&subject)),
    );
    (r.status, subject)
}

/// Three users' calls, each answered with their own token; the distinct assertions sent.
fn three_users_get_their_tokens(w: &World) -> std::collections::HashSet<String> {
    for user in ["alice", "bob", "carol"] {
        let (status, subject) = call(w, user);
        assert_eq!(status, 200, "{:?}", w.idp.violations());
        let seen = w.upstream.seen();
        assert_eq!(
            seen.last().unwrap().authorization,
            vec![bearer(&obo_token_for(&subject, API_SCOPE))]
        );
    }
    let requests = w.idp.requests();
    assert_eq!(requests.len(), 3);
    assert!(w.idp.violations().is_empty(), "{:?}", w.idp.violations());
    assert!(requests.iter().all(|r| r.field("client_secret").is_none()));
    requests
        .iter()
        .map(|r| r.field("client_assertion").unwrap().to_string())
        .collect()
}

#[test]
fn one_assertion_signed_with_the_key_serves_the_token_requests_of_several_users() {
    let w = with_private_key(json!({}), None);
    let assertions = three_users_get_their_tokens(&w);
    assert_eq!(assertions.len(), 1, "signed anew within reuse_s");
    assert_eq!(
        w.envoy.obo_counter_once("obo_client_assertions_signed", 1),
        1
    );
    // Nothing of the key (its private exponent) or of an assertion is in Envoy's log.
    let jwk: Value = obo_core::json::parse(&client_key().jwk).unwrap();
    let log = w.envoy.log();
    assert!(
        !log.contains(&jwk["d"].as_str().unwrap()[..24]),
        "key material in the log"
    );
    assert!(assertions.iter().all(|a| !log.contains(a.as_str())));
}

#[test]
fn with_reuse_s_0_each_token_request_carries_a_new_assertion() {
    let idp = MockIdp::start();
    idp.refuse_reused_assertions();
    let w = with_private_key_at(idp, json!({"client_assertion": {"reuse_s": 0}}), None);
    assert_eq!(three_users_get_their_tokens(&w).len(), 3);
    assert_eq!(
        w.envoy.obo_counter_once("obo_client_assertions_signed", 3),
        3
    );
}

#[test]
fn ps256_and_a_configured_audience_are_used() {
    let issuer = "https://login.microsoftonline.com/test-tenant/v2.0";
    let w = with_private_key(
        json!({"client_assertion": {"alg": "PS256", "audience": issuer}}),
        Some(issuer),
    );
    let (status, _) = call(&w, "alice");
    assert_eq!(status, 200, "{:?}", w.idp.violations());
    let assertion = w.idp.requests()[0]
        .field("client_assertion")
        .unwrap()
        .to_string();
    let header = assertion.split('.').next().unwrap();
    let header: Value = obo_core::json::parse(
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, header).unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "PS256");
}

#[test]
fn the_mock_refuses_a_replayed_assertion_and_a_wrong_audience() {
    // The mock's checks are what the tests above rely on; show that they bite.
    let idp = MockIdp::start();
    idp.refuse_reused_assertions();
    let w = with_private_key_at(idp, json!({}), None);
    assert_eq!(call(&w, "alice").0, 200);
    let first = w.idp.requests()[0].form.clone();
    let replay = |form: &[(String, String)]| {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        agent
            .post(w.idp.endpoint())
            .header("content-type", "application/x-www-form-urlencoded")
            .send(body)
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(replay(&first), 400);
    assert!(w
        .idp
        .violations()
        .iter()
        .any(|v| v.contains("was used before")));
    let other_idp = MockIdp::start();
    other_idp.expect_private_key(
        client_key().public.clone(),
        "https://elsewhere.example/token",
    );
    let w2 = World {
        envoy: {
            let mut config = plugin_config(&other_idp, &json!({}));
            config.as_object_mut().unwrap().remove("client_secret");
            let mut opts = EnvoyOptions::new(&config, other_idp.port, w.upstream.port);
            opts.vm_env = vec![("AZURE_APP_JWK".into(), client_key().jwk.clone())];
            Envoy::start(opts)
        },
        idp: other_idp,
        upstream: Upstream::start(),
    };
    assert_eq!(call(&w2, "bob").0, 502);
    assert!(w2.idp.violations().iter().any(|v| v.contains("claims")));
}
