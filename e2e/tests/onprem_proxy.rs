//! On premises, the token endpoint is reachable only through the site's web proxy: the shipped
//! `envoy/envoy-onprem-proxy.yaml` sends token requests through an HTTP CONNECT tunnel with TLS to
//! Entra ID inside. Here its tunnel and clusters run against a local CONNECT proxy in front of a
//! TLS token endpoint with a throw-away certificate for login.microsoftonline.com.

use std::collections::HashMap;

use obo_e2e::client::bearer;
use obo_e2e::connect_proxy::ConnectProxy;
use obo_e2e::envoy::{Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, MockIdp, CLIENT_SECRET};
use obo_e2e::stack::{plugin_config, API_SCOPE};
use obo_e2e::tls_idp::TlsIdp;
use obo_e2e::upstream::Upstream;
use obo_e2e::user_token;
use serde_json::{json, Value};

const ENTRA: &str = "login.microsoftonline.com";

/// The shipped example, rendered as `envsubst` would with the proxy's address, and trusting the
/// throw-away certificate instead of the system's CAs.
fn onprem_example(proxy_port: u16, ca_file: &std::path::Path) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../envoy/envoy-onprem-proxy.yaml"
    );
    let text = std::fs::read_to_string(path)
        .unwrap()
        .replace("${OBO_WEB_PROXY_HOST}", "127.0.0.1")
        .replace("${OBO_WEB_PROXY_PORT}", &proxy_port.to_string())
        .replace(
            "/etc/ssl/certs/ca-certificates.crt",
            &ca_file.display().to_string(),
        );
    serde_norway::from_str(&text).unwrap()
}

fn named(list: &Value, name: &str) -> Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in the example"))
        .clone()
}

struct Site {
    idp: MockIdp,
    proxy: ConnectProxy,
    upstream: Upstream,
    envoy: Envoy,
    _tls: TlsIdp,
}

/// The test's Envoy with the example's tunnel listener, token cluster and proxy cluster in place
/// of its own token cluster.
fn site() -> Site {
    let idp = MockIdp::start();
    let tls = TlsIdp::start(ENTRA, idp.port);
    let names = HashMap::from([(format!("{ENTRA}:443"), ([127, 0, 0, 1], tls.port).into())]);
    let proxy = ConnectProxy::start(names);
    let upstream = Upstream::start();
    let example = onprem_example(proxy.port, &tls.ca_file);
    let endpoint = idp.endpoint().replace(
        &format!("http://127.0.0.1:{}", idp.port),
        &format!("https://{ENTRA}"),
    );
    let config = plugin_config(&idp, &json!({"token_endpoint": endpoint}));
    let mut opts = EnvoyOptions::new(&config, idp.port, upstream.port);
    opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
    opts.bootstrap_patch = Some(Box::new(move |bootstrap: &mut Value| {
        bootstrap["bootstrap_extensions"] = example["bootstrap_extensions"].clone();
        let resources = &example["static_resources"];
        let listeners = bootstrap["static_resources"]["listeners"]
            .as_array_mut()
            .unwrap();
        listeners.push(named(&resources["listeners"], "entra_id_tunnel"));
        let clusters = bootstrap["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap();
        clusters.retain(|c| c["name"] != "entra_id");
        clusters.push(named(&resources["clusters"], "entra_id"));
        clusters.push(named(&resources["clusters"], "web_proxy"));
    }));
    let envoy = Envoy::start(opts);
    Site {
        idp,
        proxy,
        upstream,
        envoy,
        _tls: tls,
    }
}

#[test]
fn token_request_goes_through_the_web_proxy_with_tls_to_entra_inside() {
    let site = site();
    let subject = user_token("alice");
    let r = obo_e2e::client::get(
        site.envoy.port,
        "api.example.com",
        "/",
        Some(&bearer(&subject)),
    );
    assert_eq!(r.status, 200, "{}\n{}", r.body, site.envoy.log());
    // The proxy saw a tunnel to Entra ID by name, and the token endpoint one request over TLS
    // with the Host of the real endpoint.
    assert_eq!(site.proxy.targets(), vec![format!("{ENTRA}:443")]);
    let requests = site.idp.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].host.as_deref(), Some(ENTRA));
    let expected = vec![bearer(&obo_token_for(&subject, API_SCOPE))];
    assert_eq!(site.upstream.seen()[0].authorization, expected);
}

#[test]
fn a_proxy_that_refuses_the_tunnel_fails_closed() {
    let site = site();
    site.proxy.refuse();
    let subject = user_token("bob");
    let r = obo_e2e::client::get(
        site.envoy.port,
        "api.example.com",
        "/",
        Some(&bearer(&subject)),
    );
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(!site.proxy.targets().is_empty(), "no tunnel was attempted");
    assert_eq!(site.idp.count(), 0);
    assert!(
        site.upstream.seen().is_empty(),
        "the request reached the upstream"
    );
}
