//! Users of many tenants through one provider (`{tenant}` in `token_endpoint`), each tenant's
//! failures counted on their own, and RFC 8707 resource indicators: the mock token endpoint serves
//! every tenant's path, as Entra ID does, and records which tenant and which `resource`
//! parameters each token request named.

use std::time::{Duration, Instant};

use obo_e2e::client::{bearer, get_with};
use obo_e2e::envoy::{Build, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, with_resources, Behaviour, MockIdp, TokenRequest};
use obo_e2e::mock_idp::{CLIENT_ID, CLIENT_SECRET};
use obo_e2e::stack::{Stack, API_SCOPE};
use obo_e2e::{fixture, tenant_user_token, user_token};
use serde_json::{json, Value};

const CONTOSO: &str = "4c1f7a2e-93b5-4d6e-8f01-2a3b4c5d6e7f";
const FABRIKAM: &str = "a9e8d7c6-b5a4-4f3e-9d2c-1b0a9f8e7d6c";
const UNLISTED: &str = "e3d2c1b0-a9f8-4e7d-8c6b-5a4f3e2d1c0b";

/// Envoy with a provider whose endpoint is per tenant, before a mock serving every tenant.
fn multi_tenant(allowed_tenants: Value, idp_for_tenant: &[(&str, Behaviour)]) -> Stack {
    multi_tenant_with(allowed_tenants, idp_for_tenant, |_| {})
}

fn multi_tenant_with(
    allowed_tenants: Value,
    idp_for_tenant: &[(&str, Behaviour)],
    adjust: impl FnOnce(&mut EnvoyOptions),
) -> Stack {
    let idp = MockIdp::start();
    idp.serve_every_tenant();
    for (tenant, behaviour) in idp_for_tenant {
        idp.set_for_tenant(tenant, behaviour.clone());
    }
    let extra =
        json!({"token_endpoint": idp.tenant_endpoint(), "allowed_tenants": allowed_tenants});
    Stack::start_for(idp, extra, adjust)
}

fn throttled() -> Behaviour {
    Behaviour::Answer {
        status: 429,
        body: fixture("error-throttled.json"),
        headers: vec![("Retry-After".into(), "30".into())],
    }
}

fn tenant(tid: &str) -> Option<String> {
    Some(tid.to_string())
}

/// The Authorization the upstream saw on its `n`-th request.
fn forwarded(s: &Stack, n: usize) -> Vec<String> {
    s.upstream.seen()[n].authorization.clone()
}

#[test]
fn users_of_two_tenants_get_tokens_from_their_own_tenants_endpoint() {
    let s = multi_tenant(json!([CONTOSO, FABRIKAM]), &[]);
    let ann = tenant_user_token("ann", CONTOSO);
    // A tid written in capitals is still Fabrikam's, and its endpoint is written as Entra ID's.
    let bob = tenant_user_token("bob", &FABRIKAM.to_uppercase());
    for subject in [&ann, &bob] {
        let r = s.get("api.example.com", "/", Some(&bearer(subject)));
        assert_eq!(r.status, 200, "{}", r.body);
    }
    s.idp.assert_protocol_followed();
    assert_eq!(s.idp.tenants_asked(), [tenant(CONTOSO), tenant(FABRIKAM)]);
    let assertions: Vec<Option<String>> = s
        .idp
        .requests()
        .iter()
        .map(|r| r.field("assertion").map(str::to_string))
        .collect();
    assert_eq!(assertions, [Some(ann.clone()), Some(bob.clone())]);
    assert_eq!(forwarded(&s, 0), [bearer(&obo_token_for(&ann, API_SCOPE))]);
    assert_eq!(forwarded(&s, 1), [bearer(&obo_token_for(&bob, API_SCOPE))]);
}

#[test]
fn a_user_of_a_tenant_not_allowed_gets_401_without_a_token_request() {
    let s = multi_tenant(json!([CONTOSO]), &[]);
    let unlisted = tenant_user_token("eve", UNLISTED);
    let no_tid = user_token("nobody");
    for subject in [&unlisted, &no_tid] {
        let r = s.get("api.example.com", "/", Some(&bearer(subject)));
        assert_eq!(r.status, 401, "{}", r.body);
        assert_eq!(
            r.json()["error_description"],
            "the bearer token's tenant is not one this application accepts"
        );
    }
    assert_eq!(s.idp.count(), 0, "{:?}", s.idp.requests());
    assert!(s.upstream.seen().is_empty());
}

#[test]
fn a_throttled_tenant_backs_off_without_slowing_another_tenant() {
    let s = multi_tenant(json!(["*"]), &[(CONTOSO, throttled())]);
    let ann = tenant_user_token("ann", CONTOSO);
    let r = s.get("api.example.com", "/", Some(&bearer(&ann)));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(s.idp.tenants_asked(), [tenant(CONTOSO)]);
    // Contoso's next user is refused at once: Contoso backs off, and no token request is made.
    let amy = tenant_user_token("amy", CONTOSO);
    let r = s.get("api.example.com", "/", Some(&bearer(&amy)));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(
        r.json()["error_description"],
        "the token endpoint is throttling or failing; retry later"
    );
    assert_eq!(s.idp.tenants_asked(), [tenant(CONTOSO)]);
    // Fabrikam's user exchanges as usual.
    let bob = tenant_user_token("bob", FABRIKAM);
    let r = s.get("api.example.com", "/", Some(&bearer(&bob)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.idp.tenants_asked(), [tenant(CONTOSO), tenant(FABRIKAM)]);
    assert_eq!(forwarded(&s, 0), [bearer(&obo_token_for(&bob, API_SCOPE))]);
    s.idp.assert_protocol_followed();
}

#[test]
fn a_failed_exchange_is_logged_with_its_tenant_and_no_token() {
    let expired = Behaviour::fixture(400, "error-invalid-grant-expired.json");
    let s = multi_tenant(json!(["*"]), &[(CONTOSO, expired)]);
    let ann = tenant_user_token("ann-the-user", CONTOSO);
    let auth = bearer(&ann);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-request-id", "req-4c1f"),
    ];
    let r = get_with(s.envoy.port, "api.example.com", "/", &headers);
    assert_eq!(r.status, 401, "{}", r.body);
    let lines = s.envoy.filter_log_lines();
    let line = lines
        .iter()
        .find(|l| l.contains("token exchange failed"))
        .unwrap_or_else(|| panic!("no failed-exchange line in:\n{}", lines.join("\n")));
    for part in [&format!("tenant={CONTOSO}"), "request_id=req-4c1f"] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(!line.contains("ann-the-user"), "the user in: {line}");
    assert!(!line.contains(CLIENT_SECRET), "the secret in: {line}");
    for part in ann.split('.').filter(|p| p.len() >= 16) {
        assert!(!line.contains(part), "the subject token in: {line}");
    }
}

/// The bootstrap's `stats_config` that docs/metrics.md shows (its JSON block with `stats_tags`),
/// which makes the tid of `obo_tenant_exchange_failures` the label `tenant`.
fn documented_stats_config() -> Value {
    let doc = include_str!("../../docs/metrics.md");
    let snippet = doc
        .split("```json")
        .skip(1)
        .filter_map(|block| block.split("```").next())
        .find(|block| block.contains("stats_tags"))
        .expect("docs/metrics.md shows the stats_tags snippet");
    let parsed = obo_core::json::parse(snippet).expect("the snippet is JSON");
    parsed["stats_config"].clone()
}

#[test]
fn a_failing_tenant_shows_in_prometheus_by_its_tenant_label_and_a_succeeding_one_does_not() {
    let stats_config = documented_stats_config();
    let s = multi_tenant_with(json!(["*"]), &[(CONTOSO, throttled())], |opts| {
        opts.bootstrap_patch = Some(Box::new(move |b: &mut Value| {
            b["stats_config"] = stats_config;
        }));
    });
    let ann = tenant_user_token("ann", CONTOSO);
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&ann))).status,
        503
    );
    let bob = tenant_user_token("bob", FABRIKAM);
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&bob))).status,
        200
    );
    assert_eq!(s.idp.tenants_asked(), [tenant(CONTOSO), tenant(FABRIKAM)]);
    let prefix = Build::under_test().prometheus_prefix();
    let line = format!(r#"{prefix}obo_tenant_exchange_failures{{tenant="{CONTOSO}"}} 1"#);
    let deadline = Instant::now() + Duration::from_secs(10);
    let prometheus = loop {
        let text = s.envoy.admin("/stats/prometheus").unwrap_or_default();
        if text.lines().any(|l| l == line) || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        prometheus.lines().any(|l| l == line),
        "no `{line}` in:\n{prometheus}"
    );
    assert!(!prometheus.contains(FABRIKAM), "{prometheus}");
    // `/stats` keeps the whole name; the native build's names its label too.
    let name = match Build::under_test() {
        Build::Wasm => format!("obo_tenant_exchange_failures.{CONTOSO}"),
        Build::Native => format!("obo_tenant_exchange_failures.tenant.{CONTOSO}"),
    };
    assert_eq!(s.envoy.obo_counter_once(&name, 1), 1);
}

const TOOLS_SCOPE: &str = "api://prod.team.tools/.default";
const FILES: &str = "https://mcp-a.example.com/files";
const SEARCH: &str = "https://mcp-a.example.com/search";
const MAIL: &str = "https://mcp-b.example.com/mail";
const TX_AUDIENCE: &str = "dev-gcp:team:tools";
const TX_RESOURCE: &str = "https://mcp-c.example.com/";

/// Client credentials by default, and token exchange at the same endpoint for `tx.example.com`;
/// two targets with one scope and other resources.
fn with_resource_indicators() -> Stack {
    let idp = MockIdp::start();
    let extra = json!({
        "grant": "client_credentials",
        "providers": {
            "exchange": {"token_cluster": "entra_id", "grant": "token_exchange",
                         "token_endpoint": idp.endpoint(), "client_id": CLIENT_ID,
                         "client_secret": CLIENT_SECRET}
        },
        "targets": [
            {"host": "mcp-a.example.com", "scope": TOOLS_SCOPE, "resource": [FILES, SEARCH]},
            {"host": "mcp-b.example.com", "scope": TOOLS_SCOPE, "resource": MAIL},
            {"host": "tx.example.com", "provider": "exchange", "audience": TX_AUDIENCE,
             "resource": TX_RESOURCE}
        ]
    });
    Stack::start_for(idp, extra, |_| {})
}

fn resources(r: &TokenRequest) -> Vec<&str> {
    r.fields("resource")
}

#[test]
fn each_resource_arrives_as_its_own_parameter_with_both_grants() {
    let s = with_resource_indicators();
    let alice = user_token("alice");
    assert_eq!(s.get("mcp-a.example.com", "/", None).status, 200);
    assert_eq!(
        s.get("tx.example.com", "/", Some(&bearer(&alice))).status,
        200
    );
    s.idp.assert_protocol_followed();
    let sent = s.idp.requests();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].field("grant_type"), Some("client_credentials"));
    assert_eq!(resources(&sent[0]), [FILES, SEARCH]);
    assert_eq!(
        sent[1].field("grant_type"),
        Some("urn:ietf:params:oauth:grant-type:token-exchange")
    );
    assert_eq!(resources(&sent[1]), [TX_RESOURCE]);
    let for_tools = with_resources(TOOLS_SCOPE, &[FILES, SEARCH]);
    assert_eq!(forwarded(&s, 0), [bearer(&obo_token_for("", &for_tools))]);
    let for_tx = with_resources(TX_AUDIENCE, &[TX_RESOURCE]);
    assert_eq!(forwarded(&s, 1), [bearer(&obo_token_for(&alice, &for_tx))]);
}

#[test]
fn targets_with_one_scope_and_other_resources_get_different_tokens() {
    let s = with_resource_indicators();
    for host in [
        "mcp-a.example.com",
        "mcp-b.example.com",
        "mcp-a.example.com",
    ] {
        assert_eq!(s.get(host, "/", None).status, 200, "{host}");
    }
    s.idp.assert_protocol_followed();
    // One token request each; the second call to mcp-a is served its own cached token.
    let sent: Vec<Vec<String>> = s
        .idp
        .requests()
        .iter()
        .map(|r| resources(r).into_iter().map(str::to_string).collect())
        .collect();
    assert_eq!(sent, [vec![FILES, SEARCH], vec![MAIL]]);
    let a = bearer(&obo_token_for(
        "",
        &with_resources(TOOLS_SCOPE, &[FILES, SEARCH]),
    ));
    let b = bearer(&obo_token_for("", &with_resources(TOOLS_SCOPE, &[MAIL])));
    assert_ne!(a, b);
    let seen: Vec<Vec<String>> = (0..3).map(|n| forwarded(&s, n)).collect();
    assert_eq!(seen, [vec![a.clone()], vec![b], vec![a]]);
}
