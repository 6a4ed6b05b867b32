//! The on-behalf-of exchange end to end: the real Envoy, the real filter, a mock Entra ID.

mod support;

use serde_json::{json, Value};
use support::client::{bearer, get};
use support::envoy::{Envoy, EnvoyOptions};
use support::mock_idp::{obo_token_for, Behaviour, MockIdp, CLIENT_ID, CLIENT_SECRET};
use support::upstream::Upstream;
use support::user_token;

const API_SCOPE: &str = "api://prod.team.api/.default";
const OTHER_SCOPE: &str = "api://prod.team.other/.default";

struct Stack {
    idp: MockIdp,
    upstream: Upstream,
    envoy: Envoy,
}

fn plugin_config(idp: &MockIdp, extra: Value) -> Value {
    let mut cfg = json!({
        "token_cluster": "entra_id",
        "token_endpoint": idp.endpoint(),
        "client_id": CLIENT_ID,
        "client_secret": "${AZURE_APP_CLIENT_SECRET}",
        "targets": [
            {"host": "api.example.com", "scope": API_SCOPE},
            {"host": "*.team.svc.cluster.local", "path_prefix": "/v2/", "scope": OTHER_SCOPE}
        ]
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    cfg
}

fn stack(extra: Value) -> Stack {
    let idp = MockIdp::start();
    let upstream = Upstream::start();
    let mut opts = EnvoyOptions::new(&plugin_config(&idp, extra), idp.port, upstream.port);
    opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
    let envoy = Envoy::start(opts);
    Stack {
        idp,
        upstream,
        envoy,
    }
}

#[test]
fn subject_token_is_swapped_for_an_obo_token() {
    let s = stack(json!({}));
    let subject = user_token("alice");
    let r = get(
        s.envoy.port,
        "api.example.com",
        "/orders",
        Some(&bearer(&subject)),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
    s.idp.assert_protocol_followed();
    let req = &s.idp.requests()[0];
    assert_eq!(req.field("assertion"), Some(subject.as_str()));
    assert_eq!(req.field("scope"), Some(API_SCOPE));
    assert_eq!(
        req.host.as_deref(),
        Some(format!("127.0.0.1:{}", s.idp.port).as_str())
    );
}
