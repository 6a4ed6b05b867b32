//! Tokens go only where Envoy sends them. Each test runs the real Envoy with a catch-all virtual
//! host and more than one recording cluster, sends what an attacker (or a careless client) would,
//! and asserts which cluster received which `Authorization`: an on-behalf-of token, the caller's
//! own token, or none. In every test, a token issued for a target reaches only the cluster that
//! target names, or for a host target the cluster Envoy routes that exact host to.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use obo_e2e::client::{bearer, raw_get, Response};
use obo_e2e::envoy::{cluster, Build, Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, Behaviour, MockIdp, CLIENT_ID, CLIENT_SECRET};
use obo_e2e::stack::plugin_config;
use obo_e2e::upstream::{Upstream, REDIRECT_PATH};
use obo_e2e::user_token;
use serde_json::{json, Value};

const API: &str = "api://api/.default";
const TEAM_V2: &str = "api://team-v2/.default";
const ADMIN: &str = "api://admin/.default";
const ORDERS: &str = "api://prod.shop.orders/.default";
const ORDERS_CLUSTER: &str = "outbound|80||orders.shop.svc.cluster.local";

/// What a cluster received in `Authorization`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    /// An on-behalf-of token, named by the scope it was issued for.
    Obo(String),
    /// The caller's own (subject) token.
    Caller,
    Nothing,
    Other(String),
}

/// Envoy with the filter, a mock Entra ID, and one recording upstream per cluster.
struct Routed {
    idp: MockIdp,
    clusters: Vec<(String, Upstream)>,
    envoy: Envoy,
    /// Every subject token a test sent.
    callers: std::sync::Mutex<Vec<String>>,
}

/// How a test's Envoy differs from the suite's.
struct Setup {
    /// Fields laid over the suite's plugin configuration (`targets`, `unmatched`, ...).
    plugin: Value,
    virtual_hosts: Value,
    /// Recording clusters; the first also stands behind Envoy's default `upstream` cluster.
    clusters: &'static [&'static str],
    /// Fields laid over the connection manager's (`normalize_path`, ...).
    connection_manager: Value,
    /// A Lua filter placed before this one.
    lua_before: Option<&'static str>,
    /// Fields laid over the token cluster (`circuit_breakers`).
    token_cluster: Value,
    concurrency: u32,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            plugin: json!({}),
            virtual_hosts: issue_virtual_hosts(),
            clusters: &["api", "other"],
            connection_manager: json!({}),
            lua_before: None,
            token_cluster: json!({}),
            concurrency: 2,
        }
    }
}

fn vhost(name: &str, domains: &[&str], cluster: &str) -> Value {
    json!({"name": name, "domains": domains,
           "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster}}]})
}

/// The issue's routes: `api.example.com` (and with `:80`) and `*.team.local` to cluster `api`,
/// anything else to `other`.
fn issue_virtual_hosts() -> Value {
    json!([
        vhost("api", &["api.example.com", "api.example.com:80"], "api"),
        vhost("team", &["*.team.local"], "api"),
        vhost("catch-all", &["*"], "other"),
    ])
}

/// The issue's targets.
fn issue_targets() -> Value {
    json!([
        {"host": "api.example.com", "scope": API},
        {"host": "*.team.local", "path_prefix": "/v2/", "scope": TEAM_V2}
    ])
}

fn lay_over(base: &mut Value, extra: &Value) {
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        base[k] = v;
    }
}

impl Routed {
    fn start(setup: Setup) -> Routed {
        let idp = MockIdp::start();
        let clusters: Vec<(String, Upstream)> = setup
            .clusters
            .iter()
            .map(|name| (name.to_string(), Upstream::start()))
            .collect();
        let mut plugin = plugin_config(&idp, &json!({"targets": issue_targets()}));
        lay_over(&mut plugin, &setup.plugin);
        let mut opts = EnvoyOptions::new(&plugin, idp.port, clusters[0].1.port);
        opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
        opts.concurrency = setup.concurrency;
        let recording: Vec<Value> = clusters
            .iter()
            .map(|(name, upstream)| cluster(name, Some(upstream.port)))
            .collect();
        opts.bootstrap_patch = Some(Box::new(move |bootstrap: &mut Value| {
            let resources = &mut bootstrap["static_resources"];
            for c in resources["clusters"].as_array_mut().unwrap() {
                if c["name"] == "entra_id" {
                    lay_over(c, &setup.token_cluster);
                }
            }
            resources["clusters"]
                .as_array_mut()
                .unwrap()
                .extend(recording);
            let hcm =
                &mut resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"];
            hcm["route_config"] = json!({"virtual_hosts": setup.virtual_hosts});
            lay_over(hcm, &setup.connection_manager);
            if let Some(lua) = setup.lua_before {
                let filter = json!({
                    "name": "envoy.filters.http.lua",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                        "default_source_code": {"inline_string": lua}
                    }
                });
                hcm["http_filters"]
                    .as_array_mut()
                    .unwrap()
                    .insert(0, filter);
            }
        }));
        Routed {
            idp,
            clusters,
            envoy: Envoy::start(opts),
            callers: Default::default(),
        }
    }

    /// A GET as written, with a fresh user's token (remembered as a caller's).
    fn get_as(&self, user: &str, authority: &str, path: &str) -> Response {
        let token = user_token(user);
        self.callers.lock().unwrap().push(token.clone());
        raw_get(self.envoy.port, authority, path, Some(&bearer(&token)))
    }

    fn get_with_token(&self, token: &str, authority: &str, path: &str) -> Response {
        self.callers.lock().unwrap().push(token.to_string());
        raw_get(self.envoy.port, authority, path, Some(&bearer(token)))
    }

    fn upstream(&self, name: &str) -> &Upstream {
        &self.clusters.iter().find(|(n, _)| n == name).unwrap().1
    }

    /// What each request that reached `cluster` carried, with its path.
    fn received(&self, cluster: &str) -> Vec<(String, Got)> {
        let issued: HashMap<String, String> = self
            .idp
            .requests()
            .iter()
            .map(|r| {
                let (subject, scope) = (
                    r.field("assertion").unwrap_or(""),
                    r.field("scope").unwrap_or(""),
                );
                (obo_token_for(subject, scope), scope.to_string())
            })
            .collect();
        let callers = self.callers.lock().unwrap();
        self.upstream(cluster)
            .seen()
            .into_iter()
            .map(|seen| {
                let got = match seen.authorization.as_slice() {
                    [] => Got::Nothing,
                    [one] => {
                        let token = one.strip_prefix("Bearer ").unwrap_or(one);
                        match issued.get(token) {
                            Some(scope) => Got::Obo(scope.clone()),
                            None if callers.iter().any(|c| c == token) => Got::Caller,
                            None => Got::Other(one.clone()),
                        }
                    }
                    many => Got::Other(many.join(" | ")),
                };
                (seen.path, got)
            })
            .collect()
    }

    /// The invariant: an on-behalf-of token reached no cluster but its target's (`homes`: scope
    /// and cluster).
    fn assert_tokens_stayed_home(&self, homes: &[(&str, &str)]) {
        for (cluster, _) in &self.clusters {
            for (path, got) in self.received(cluster) {
                if let Got::Obo(scope) = &got {
                    assert!(
                        homes.contains(&(scope.as_str(), cluster.as_str())),
                        "cluster {cluster} received the token for {scope} on {path}"
                    );
                }
                assert!(
                    !matches!(got, Got::Other(_)),
                    "cluster {cluster} received {got:?} on {path}"
                );
            }
        }
    }
}

/// A request refused by the filter: `status`, and it reached no cluster.
fn assert_refused(r: &Response, status: u16, what: &str) {
    assert_eq!(r.status, status, "{what}: {}", r.body);
}

#[test]
fn an_authority_envoy_routes_elsewhere_never_carries_the_targets_token() {
    let s = Routed::start(Setup::default());
    // Well formed, but another virtual host to Envoy: unmatched, so it goes on without a token.
    let r = s.get_as("alice", "api.example.com:8443", "/x");
    assert_eq!(r.status, 200, "{}", r.body);
    // Malformed and aimed at a target: refused before anything is sent.
    for (authority, path) in [
        ("api.example.com.", "/x"),
        ("api.example.com.:80", "/x"),
        ("api.example.com:", "/x"),
        ("api.example.com:0x50", "/x"),
        ("api.example.com..", "/x"),
        ("api.example.com@", "/x"),
        ("%61pi.example.com", "/x"),
        ("api.example.com;x", "/x"),
        ("[api.example.com]", "/x"),
        ("x.team.local.", "/v2/x"),
    ] {
        assert_refused(&s.get_as("alice", authority, path), 400, authority);
    }
    // The exact names still get their token, at the cluster Envoy routes them to.
    for (authority, path) in [("api.example.com", "/x"), ("x.team.local", "/v2/x")] {
        assert_eq!(s.get_as("bob", authority, path).status, 200, "{authority}");
    }
    assert_eq!(s.received("other"), vec![("/x".to_string(), Got::Nothing)]);
    assert_eq!(
        s.received("api"),
        vec![
            ("/x".to_string(), Got::Obo(API.into())),
            ("/v2/x".to_string(), Got::Obo(TEAM_V2.into()))
        ]
    );
    s.assert_tokens_stayed_home(&[(API, "api"), (TEAM_V2, "api")]);
}

#[test]
fn envoys_host_normalization_does_not_make_a_malformed_authority_a_match() {
    let s = Routed::start(Setup {
        connection_manager: json!({"strip_any_host_port": true, "strip_trailing_host_dot": true}),
        ..Setup::default()
    });
    // Envoy strips these to api.example.com before routing: filter and router agree on it.
    for authority in ["api.example.com:8443", "api.example.com."] {
        assert_eq!(
            s.get_as("alice", authority, "/x").status,
            200,
            "{authority}"
        );
    }
    // These it does not strip, and routes to the catch-all; the filter refuses them.
    for authority in [
        "api.example.com:",
        "api.example.com:0x50",
        "api.example.com..",
    ] {
        assert_refused(&s.get_as("alice", authority, "/x"), 400, authority);
    }
    assert!(s.received("other").is_empty());
    assert_eq!(s.received("api").len(), 2);
    s.assert_tokens_stayed_home(&[(API, "api")]);
}

#[test]
fn with_deny_a_catch_all_route_to_another_cluster_gets_nothing() {
    let s = Routed::start(Setup {
        plugin: json!({"unmatched": "deny"}),
        clusters: &["api", "partner"],
        virtual_hosts: json!([
            vhost("api", &["api.example.com"], "api"),
            {"name": "catch-all", "domains": ["*"], "routes": [{"match": {"prefix": "/"},
              "route": {"cluster": "partner", "host_rewrite_literal": "partner.example.net"}}]}
        ]),
        ..Setup::default()
    });
    assert_refused(
        &s.get_as("alice", "api.example.com:8080", "/x"),
        403,
        "another port",
    );
    assert_eq!(s.idp.count(), 0);
    assert!(s.received("partner").is_empty());
    assert!(s.received("api").is_empty());
}

/// An Istio sidecar's routes for a Service: every name it can be called by.
fn istio_virtual_hosts() -> Value {
    let names = [
        "orders",
        "orders.shop",
        "orders.shop.svc",
        "orders.shop.svc.cluster.local",
        "10.96.0.7",
    ];
    let mut domains: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    domains.extend(names.iter().map(|n| format!("{n}:80")));
    let domains: Vec<&str> = domains.iter().map(String::as_str).collect();
    json!([
        vhost("orders.shop.svc.cluster.local:80", &domains, ORDERS_CLUSTER),
        vhost("catch-all", &["*"], "other"),
    ])
}

#[test]
fn a_cluster_target_covers_every_name_of_an_istio_service_and_nothing_else() {
    let s = Routed::start(Setup {
        plugin: json!({"targets": [{"cluster": "outbound|*||orders.shop.svc.cluster.local", "scope": ORDERS}]}),
        clusters: &[ORDERS_CLUSTER, "other"],
        virtual_hosts: istio_virtual_hosts(),
        ..Setup::default()
    });
    let names = [
        "orders",
        "orders:80",
        "orders.shop",
        "orders.shop.svc",
        "orders.shop.svc.cluster.local",
        "10.96.0.7",
        "10.96.0.7:80",
    ];
    for name in names {
        assert_eq!(s.get_as("alice", name, "/items").status, 200, "{name}");
    }
    // Not a name of the Service: Envoy routes it elsewhere, and it goes without a token.
    assert_eq!(s.get_as("alice", "orders.other", "/items").status, 200);
    let got = s.received(ORDERS_CLUSTER);
    assert_eq!(got.len(), names.len());
    assert!(
        got.iter().all(|(_, g)| *g == Got::Obo(ORDERS.into())),
        "{got:?}"
    );
    assert_eq!(
        s.received("other"),
        vec![("/items".to_string(), Got::Nothing)]
    );
    assert_eq!(s.idp.count(), 1, "one user, one scope: one token request");
    s.assert_tokens_stayed_home(&[(ORDERS, ORDERS_CLUSTER)]);
}

fn path_targets() -> Value {
    json!([
        {"host": "*.team.local", "path_prefix": "/v2/", "scope": TEAM_V2},
        {"host": "api.example.com", "path_prefix": "/admin/", "scope": ADMIN},
        {"host": "api.example.com", "scope": API}
    ])
}

#[test]
fn a_path_the_router_or_upstream_may_read_differently_never_carries_a_prefix_token() {
    let s = Routed::start(Setup {
        plugin: json!({"targets": path_targets()}),
        ..Setup::default()
    });
    for (authority, path) in [
        ("x.team.local", "/v2/../v1/x"),
        ("x.team.local", "/v2/%2e%2e/v1/x"),
        ("x.team.local", "//v2/x"),
        ("x.team.local", "/%762/x"),
        ("api.example.com", "/user/../admin/x"),
        ("api.example.com", "/admin/%2E%2E/user/x"),
    ] {
        assert_refused(&s.get_as("alice", authority, path), 400, path);
    }
    // Another case is another prefix to Envoy's router too: unmatched, no token.
    assert_eq!(s.get_as("alice", "x.team.local", "/V2/x").status, 200);
    assert_eq!(s.received("api"), vec![("/V2/x".to_string(), Got::Nothing)]);
    assert_eq!(s.idp.count(), 0);
    s.assert_tokens_stayed_home(&[(TEAM_V2, "api"), (ADMIN, "api"), (API, "api")]);
}

#[test]
fn where_envoy_normalizes_paths_filter_and_router_see_the_same_path() {
    let s = Routed::start(Setup {
        plugin: json!({"targets": path_targets()}),
        connection_manager: json!({"normalize_path": true, "merge_slashes": true,
                                   "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD"}),
        ..Setup::default()
    });
    let cases = [
        ("x.team.local", "/v2/../v1/x", "/v1/x", Got::Nothing),
        ("x.team.local", "//v2/x", "/v2/x", Got::Obo(TEAM_V2.into())),
        ("x.team.local", "/%762/x", "/v2/x", Got::Obo(TEAM_V2.into())),
        (
            "api.example.com",
            "/user/../admin/x",
            "/admin/x",
            Got::Obo(ADMIN.into()),
        ),
    ];
    for (authority, path, _, _) in &cases {
        assert_eq!(s.get_as("alice", authority, path).status, 200, "{path}");
    }
    let expected: Vec<(String, Got)> = cases
        .iter()
        .map(|(_, _, arrived, got)| (arrived.to_string(), got.clone()))
        .collect();
    assert_eq!(s.received("api"), expected);
    s.assert_tokens_stayed_home(&[(TEAM_V2, "api"), (ADMIN, "api"), (API, "api")]);
}

#[test]
fn an_internal_redirect_to_another_host_leaves_the_token_behind() {
    for unmatched in ["strip", "passthrough"] {
        let s = Routed::start(Setup {
            plugin: json!({"unmatched": unmatched}),
            clusters: &["api", "evil"],
            virtual_hosts: json!([
                {"name": "api", "domains": ["api.example.com"], "routes": [{"match": {"prefix": "/"},
                  "route": {"cluster": "api", "internal_redirect_policy": {}}}]},
                vhost("evil", &["evil.example.org"], "evil"),
            ]),
            ..Setup::default()
        });
        let r = s.get_as("alice", "api.example.com", REDIRECT_PATH);
        assert_eq!(r.status, 200, "{unmatched}: {}", r.body);
        assert_eq!(
            s.received("api"),
            vec![(REDIRECT_PATH.to_string(), Got::Obo(API.into()))],
            "{unmatched}"
        );
        assert_eq!(
            s.received("evil"),
            vec![("/steal".to_string(), Got::Nothing)],
            "{unmatched}: Envoy followed the redirect, without the token"
        );
        s.assert_tokens_stayed_home(&[(API, "api")]);
    }
}

#[test]
fn an_earlier_filter_that_rewrites_the_authority_cannot_carry_a_host_and_cluster_target_elsewhere()
{
    let s = Routed::start(Setup {
        plugin: json!({"targets": [{"host": "api.example.com", "cluster": "api", "scope": API}]}),
        // Routes the request by a header: Envoy picks the route again after this filter.
        lua_before: Some(REROUTE_LUA),
        ..Setup::default()
    });
    let token = user_token("alice");
    s.callers.lock().unwrap().push(token.clone());
    let rerouted = obo_e2e::client::get_with(
        s.envoy.port,
        "api.example.com",
        "/x",
        &[
            ("authorization", &bearer(&token)),
            ("x-reroute-to", "elsewhere.example.org"),
        ],
    );
    assert_eq!(rerouted.status, 200, "{}", rerouted.body);
    assert_eq!(
        s.get_with_token(&token, "api.example.com", "/y").status,
        200
    );
    // Wherever Envoy's second look sent the rerouted request, it went without a token.
    let mut all = s.received("api");
    all.extend(s.received("other"));
    all.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        all,
        vec![
            ("/x".to_string(), Got::Nothing),
            ("/y".to_string(), Got::Obo(API.into()))
        ]
    );
    s.assert_tokens_stayed_home(&[(API, "api")]);
}

#[test]
fn a_route_that_disables_the_filter_keeps_the_applications_own_credentials() {
    let disabled = json!({Build::under_test().filter_name(): {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "disabled": true}});
    let s = Routed::start(Setup {
        virtual_hosts: json!([
            vhost("api", &["api.example.com"], "api"),
            {"name": "partner", "domains": ["partner.example.net"], "typed_per_filter_config": disabled,
             "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "partner"}}]},
            vhost("catch-all", &["*"], "other"),
        ]),
        clusters: &["api", "partner", "other"],
        ..Setup::default()
    });
    let own = "Basic YXBwOnNlY3JldA==";
    for authority in ["partner.example.net", "elsewhere.example.net"] {
        let r = raw_get(s.envoy.port, authority, "/x", Some(own));
        assert_eq!(r.status, 200, "{authority}: {}", r.body);
    }
    assert_eq!(
        s.received("partner"),
        vec![("/x".to_string(), Got::Other(own.into()))]
    );
    assert_eq!(s.received("other"), vec![("/x".to_string(), Got::Nothing)]);
}

/// Rewrites `:authority` to `x-reroute-to` when a request has it: Envoy picks the route again.
const REROUTE_LUA: &str = r#"function envoy_on_request(h)
  local to = h:headers():get("x-reroute-to")
  if to then h:headers():replace(":authority", to) end
end"#;

#[test]
fn the_cluster_read_after_an_earlier_filter_reroutes_is_the_one_each_build_documents() {
    // What docs/routing.md tells operators: the Wasm build reads the cluster Envoy chose before
    // the rewrite (`xds.cluster_name` is not updated), the native build the cluster of the route
    // Envoy would take now. Shown without a token: a matched cluster target wants a bearer token
    // (401); an unmatched request is denied (403).
    let s = Routed::start(Setup {
        plugin: json!({"targets": [{"cluster": "api", "scope": API}], "unmatched": "deny"}),
        lua_before: Some(REROUTE_LUA),
        ..Setup::default()
    });
    let (from_api, from_elsewhere) = match Build::under_test() {
        Build::Wasm => (401, 403),
        Build::Native => (403, 401),
    };
    let to_api_rerouted = obo_e2e::client::get_with(
        s.envoy.port,
        "api.example.com",
        "/x",
        &[("x-reroute-to", "elsewhere.example.org")],
    );
    assert_eq!(
        to_api_rerouted.status, from_api,
        "rerouted from api to elsewhere: {}",
        to_api_rerouted.body
    );
    let to_other_rerouted = obo_e2e::client::get_with(
        s.envoy.port,
        "elsewhere.example.org",
        "/x",
        &[("x-reroute-to", "api.example.com")],
    );
    assert_eq!(
        to_other_rerouted.status, from_elsewhere,
        "rerouted from elsewhere to api: {}",
        to_other_rerouted.body
    );
    assert_eq!(s.idp.count(), 0);
}

/// An unsigned token, as anyone could make one: a JWT with a future `exp` and nothing else true.
fn junk_token(n: usize) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let exp = obo_e2e::now() + 3600;
    let payload = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"exp":{exp},"aud":"{CLIENT_ID}","oid":"junk-{n}"}}"#
    ));
    format!("{header}.{payload}.c2ln")
}

/// Sends each token's request at once, each on its own connection; their answers, in order.
fn all_at_once(port: u16, tokens: &[String]) -> Vec<Response> {
    std::thread::scope(|scope| {
        let handles: Vec<_> = tokens
            .iter()
            .map(|t| scope.spawn(move || raw_get(port, "api.example.com", "/x", Some(&bearer(t)))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn junk_tokens_that_fill_envoys_queue_for_the_token_cluster_lock_no_one_out() {
    // Two connections to a slow IdP and ten waiting requests at most: 40 junk tokens at once
    // overflow Envoy's circuit breakers, and those that wait in its queue time out there.
    let s = Routed::start(Setup {
        plugin: json!({"token_timeout_ms": 2500}),
        token_cluster: json!({"circuit_breakers": {"thresholds": [
            {"max_connections": 2, "max_pending_requests": 10}
        ]}}),
        concurrency: 1,
        ..Setup::default()
    });
    s.idp.set(Behaviour::Delay(
        Duration::from_millis(1000),
        Box::new(Behaviour::issue()),
    ));
    let junk: Vec<String> = (0..40).map(junk_token).collect();
    let answers = all_at_once(s.envoy.port, &junk);
    let status = |code| answers.iter().filter(|r| r.status == code).count();
    assert!(
        status(503) >= 20,
        "Envoy's circuit breakers refused {} of 40",
        status(503)
    );
    assert!(status(504) >= 1, "none timed out in Envoy's queue");
    // Right after, a new user is exchanged: none of that was Entra ID failing.
    s.idp.set(Behaviour::issue());
    let r = s.get_as("alice", "api.example.com", "/after");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        s.received("api").last(),
        Some(&("/after".to_string(), Got::Obo(API.into())))
    );
    s.assert_tokens_stayed_home(&[(API, "api")]);
}

#[test]
fn past_the_exchange_limit_new_tokens_are_refused_at_once_and_cached_users_go_on() {
    let s = Routed::start(Setup {
        plugin: json!({"max_exchanges_in_flight_per_worker": 5}),
        concurrency: 1,
        ..Setup::default()
    });
    let cached = user_token("cached");
    assert_eq!(
        s.get_with_token(&cached, "api.example.com", "/warm").status,
        200
    );
    s.idp.set(Behaviour::Delay(
        Duration::from_millis(2000),
        Box::new(Behaviour::issue()),
    ));
    let junk: Vec<String> = (0..20).map(junk_token).collect();
    let (answers, cached_answer) = std::thread::scope(|scope| {
        let flood = scope.spawn(|| all_at_once(s.envoy.port, &junk));
        std::thread::sleep(Duration::from_millis(500));
        let started = Instant::now();
        let r = raw_get(
            s.envoy.port,
            "api.example.com",
            "/cached",
            Some(&bearer(&cached)),
        );
        let took = started.elapsed();
        (flood.join().unwrap(), (r, took))
    });
    let over: Vec<&Response> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        over.len(),
        15,
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert!(over.iter().all(|r| r.header("retry-after") == Some("1")));
    assert_eq!(answers.iter().filter(|r| r.status == 200).count(), 5);
    assert_eq!(
        s.idp.count(),
        1 + 5,
        "the cached user's, and five of the junk"
    );
    let (r, took) = cached_answer;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        took < Duration::from_millis(1000),
        "the cached user waited {took:?}"
    );
    assert_eq!(
        s.envoy
            .obo_counter_once("obo_requests_over_exchange_limit", 15),
        15
    );
}

#[test]
fn odd_expiries_are_cached_within_bounds_and_a_subject_token_without_exp_is_refused() {
    for (expires_in, label) in [
        (json!(3599.9), "3599.9"),
        (json!(1e30), "1e30"),
        (json!(u64::MAX), "u64::MAX"),
        (json!("3599.9"), "\"3599.9\""),
    ] {
        let s = Routed::start(Setup::default());
        s.idp.set(Behaviour::Issue { expires_in });
        let token = user_token("alice");
        for path in ["/1", "/2"] {
            assert_eq!(
                s.get_with_token(&token, "api.example.com", path).status,
                200,
                "{label}"
            );
        }
        assert_eq!(s.idp.count(), 1, "expires_in {label}: cached");
    }
    let s = Routed::start(Setup::default());
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(format!(r#"{{"aud":"{CLIENT_ID}","oid":"no-exp"}}"#));
    let no_exp = format!("{header}.{payload}.c2ln");
    let r = s.get_with_token(&no_exp, "api.example.com", "/x");
    assert_refused(&r, 401, "no exp");
    assert!(r
        .header("www-authenticate")
        .unwrap_or("")
        .contains("no expiry"));
    assert_eq!(s.idp.count(), 0);
    assert!(s.received("api").is_empty());
}
