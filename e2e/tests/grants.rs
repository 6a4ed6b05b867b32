//! One configuration, three grants: Entra ID on-behalf-of (the default provider), Entra ID client
//! credentials (the application as itself) and RFC 8693 token exchange against a second token
//! endpoint standing in for NAIS TokenX, with private-key client authentication and the
//! `TOKEN_X_*` variables as defaults. Each mock checks every field of its grant.

use obo_e2e::client::bearer;
use obo_e2e::client_key::client_key;
use obo_e2e::envoy::{cluster, Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, MockIdp, CLIENT_SECRET};
use obo_e2e::stack::{plugin_config, API_SCOPE};
use obo_e2e::upstream::Upstream;
use obo_e2e::user_token;
use serde_json::{json, Value};

const APP_SCOPE: &str = "api://prod.team.app/.default";
const TX_AUDIENCE: &str = "dev-gcp:team:other";
const TX_CLIENT_ID: &str = "dev-gcp:team:me";

struct Mesh {
    entra: MockIdp,
    tokenx: MockIdp,
    upstream: Upstream,
    envoy: Envoy,
}

/// How each provider authenticates: as in NAIS (a secret for Entra ID, the key for TokenX), or the
/// other way round (Entra ID's client credentials with the key, a Keycloak-style exchange with a
/// secret).
#[derive(Clone, Copy, PartialEq)]
enum Credentials {
    AsNais,
    Swapped,
}

fn mesh(existing_authorization: &str) -> Mesh {
    mesh_with(existing_authorization, Credentials::AsNais)
}

fn mesh_with(existing_authorization: &str, credentials: Credentials) -> Mesh {
    let entra = MockIdp::start();
    let tokenx = MockIdp::start();
    tokenx.expect_client_id(TX_CLIENT_ID);
    // As Keycloak does; token_exchange signs a new assertion for every token request by default.
    tokenx.refuse_reused_assertions();
    let swapped = credentials == Credentials::Swapped;
    if swapped {
        entra.expect_private_key(client_key().public.clone(), &entra.endpoint());
    } else {
        tokenx.expect_private_key(client_key().public.clone(), &tokenx.endpoint());
    }
    let upstream = Upstream::start();
    // Swapped: every Entra ID provider uses the key, and TokenX a secret (the mock's).
    let (azure_key, tokenx_secret) = if swapped {
        (json!(client_key().jwk), json!(CLIENT_SECRET))
    } else {
        (Value::Null, Value::Null)
    };
    let config = plugin_config(
        &entra,
        &json!({
            "providers": {
                "app": {"token_cluster": "entra_id", "grant": "client_credentials",
                        "token_endpoint": entra.endpoint(),
                        "client_id": obo_e2e::mock_idp::CLIENT_ID,
                        "client_jwk": azure_key,
                        "existing_authorization": existing_authorization},
                // Endpoint, client id and key from TOKEN_X_*.
                "tokenx": {"token_cluster": "tokenx", "grant": "token_exchange",
                           "client_secret": tokenx_secret}
            },
            "targets": [
                {"host": "api.example.com", "scope": API_SCOPE},
                {"host": "app.example.com", "provider": "app", "scope": APP_SCOPE},
                {"host": "tx.example.com", "provider": "tokenx", "audience": TX_AUDIENCE}
            ]
        }),
    );
    let mut config = config;
    // Unset credentials fall back to the environment.
    for provider in ["app", "tokenx"] {
        let fields = config["providers"][provider].as_object_mut().unwrap();
        fields.retain(|_, v| !v.is_null());
    }
    if swapped {
        let top = config.as_object_mut().unwrap();
        top.remove("client_secret");
        top.insert("client_jwk".into(), json!(client_key().jwk));
    }
    let mut opts = EnvoyOptions::new(&config, entra.port, upstream.port);
    opts.vm_env = vec![
        ("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
        ("TOKEN_X_TOKEN_ENDPOINT".into(), tokenx.endpoint()),
        ("TOKEN_X_CLIENT_ID".into(), TX_CLIENT_ID.into()),
        ("TOKEN_X_PRIVATE_JWK".into(), client_key().jwk.clone()),
    ];
    let tokenx_port = tokenx.port;
    opts.bootstrap_patch = Some(Box::new(move |bootstrap: &mut Value| {
        bootstrap["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
            .push(cluster("tokenx", Some(tokenx_port)));
    }));
    let envoy = Envoy::start(opts);
    Mesh {
        entra,
        tokenx,
        upstream,
        envoy,
    }
}

/// GET through the filter; the status and the Authorization the upstream saw.
fn call(m: &Mesh, host: &str, authorization: Option<&str>) -> (u16, Vec<String>) {
    let before = m.upstream.seen().len();
    let r = obo_e2e::client::get(m.envoy.port, host, "/", authorization);
    let seen = m.upstream.seen();
    let forwarded = if seen.len() > before {
        seen.last().unwrap().authorization.clone()
    } else {
        Vec::new()
    };
    (r.status, forwarded)
}

#[test]
fn each_target_gets_a_token_from_its_own_provider_and_grant() {
    let m = mesh("replace");
    let alice = user_token("alice");
    let bob = user_token("bob");
    for _ in 0..2 {
        assert_eq!(
            call(&m, "api.example.com", Some(&bearer(&alice))),
            (200, vec![bearer(&obo_token_for(&alice, API_SCOPE))])
        );
        // The application's own token: no caller token needed, and a caller's is replaced.
        assert_eq!(
            call(&m, "app.example.com", None),
            (200, vec![bearer(&obo_token_for("", APP_SCOPE))])
        );
        assert_eq!(
            call(&m, "app.example.com", Some(&bearer(&bob))),
            (200, vec![bearer(&obo_token_for("", APP_SCOPE))])
        );
        assert_eq!(
            call(&m, "tx.example.com", Some(&bearer(&alice))),
            (200, vec![bearer(&obo_token_for(&alice, TX_AUDIENCE))])
        );
    }
    // Once per key: alice's OBO token and the application's token from Entra ID, alice's
    // exchanged token from TokenX; the second round came from the cache.
    assert!(
        m.entra.violations().is_empty(),
        "{:?}",
        m.entra.violations()
    );
    assert!(
        m.tokenx.violations().is_empty(),
        "{:?}",
        m.tokenx.violations()
    );
    let grants: Vec<String> = m
        .entra
        .requests()
        .iter()
        .map(|r| r.field("grant_type").unwrap_or("").to_string())
        .collect();
    assert_eq!(
        grants,
        [
            "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "client_credentials"
        ]
    );
    let tx = m.tokenx.requests();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx[0].field("subject_token"), Some(alice.as_str()));
    assert_eq!(tx[0].field("audience"), Some(TX_AUDIENCE));
    assert!(tx[0].field("client_assertion").is_some());
    // Three more users right after, so that at least two exchanges are a worker's: a new
    // assertion for each, which this TokenX requires.
    for user in ["bob", "carol", "dave"] {
        let subject = user_token(user);
        assert_eq!(
            call(&m, "tx.example.com", Some(&bearer(&subject))),
            (200, vec![bearer(&obo_token_for(&subject, TX_AUDIENCE))])
        );
    }
    assert!(
        m.tokenx.violations().is_empty(),
        "{:?}",
        m.tokenx.violations()
    );
}

#[test]
fn a_token_exchange_target_refuses_a_request_without_a_caller_token() {
    let m = mesh("replace");
    assert_eq!(call(&m, "tx.example.com", None), (401, vec![]));
    assert_eq!(m.tokenx.count(), 0);
}

#[test]
fn client_credentials_can_keep_or_refuse_a_callers_authorization() {
    let alice = bearer(&user_token("alice"));
    let m = mesh("keep");
    assert_eq!(
        call(&m, "app.example.com", Some(&alice)),
        (200, vec![alice.clone()])
    );
    assert_eq!(m.entra.count(), 0);
    let m = mesh("refuse");
    assert_eq!(call(&m, "app.example.com", Some(&alice)), (400, vec![]));
    assert_eq!(m.entra.count(), 0);
}

#[test]
fn client_credentials_with_the_key_and_token_exchange_with_a_secret_work_too() {
    let m = mesh_with("replace", Credentials::Swapped);
    let alice = user_token("alice");
    assert_eq!(
        call(&m, "api.example.com", Some(&bearer(&alice))),
        (200, vec![bearer(&obo_token_for(&alice, API_SCOPE))])
    );
    assert_eq!(
        call(&m, "app.example.com", None),
        (200, vec![bearer(&obo_token_for("", APP_SCOPE))])
    );
    assert_eq!(
        call(&m, "tx.example.com", Some(&bearer(&alice))),
        (200, vec![bearer(&obo_token_for(&alice, TX_AUDIENCE))])
    );
    assert!(
        m.entra.violations().is_empty(),
        "{:?}",
        m.entra.violations()
    );
    assert!(
        m.tokenx.violations().is_empty(),
        "{:?}",
        m.tokenx.violations()
    );
    let entra = m.entra.requests();
    assert!(entra.iter().all(|r| r.field("client_assertion").is_some()));
    let tx = m.tokenx.requests();
    assert_eq!(tx[0].field("client_secret"), Some(CLIENT_SECRET));
    assert_eq!(tx[0].field("client_id"), Some(TX_CLIENT_ID));
}
