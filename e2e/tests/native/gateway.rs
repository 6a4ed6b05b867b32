//! Envoy Gateway's way of loading the module, from the manifests in `envoy/gateway/`: the filter
//! as Envoy Gateway (v1.8 and later) writes it into Envoy's configuration for an
//! EnvoyExtensionPolicy's `dynamicModule` entry (`internal/xds/translator/dynamicmodule.go`): the
//! module by file name, the filter disabled in the connection manager and enabled on each route
//! the policy targets, its `config` handed over as JSON text. The Kubernetes side (the EnvoyProxy's
//! remote module, its Secret) is checked for what the policy relies on.

use obo_e2e::client::bearer;
use obo_e2e::envoy::native_path;
use obo_e2e::mock_idp::{obo_token_for, MockIdp, CLIENT_ID, CLIENT_SECRET};
use obo_e2e::stack::Stack;
use obo_e2e::user_token;
use serde_json::{json, Value};

use super::{native, supported_envoy_version};

fn manifest(file: &str) -> Value {
    let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/gateway"));
    let text = std::fs::read_to_string(path.join(file)).expect("a manifest");
    serde::Deserialize::deserialize(serde_norway::Deserializer::from_str(&text)).expect("YAML")
}

/// The filter's name in the connection manager, as Envoy Gateway makes it for the first
/// `dynamicModule` entry of the policy `namespace/name`.
fn filter_name(policy: &Value) -> String {
    let meta = &policy["metadata"];
    format!(
        "envoy.filters.http.dynamic_modules/envoyextensionpolicy/{}/{}/dynamic-module/0",
        meta["namespace"].as_str().unwrap_or("default"),
        meta["name"].as_str().expect("a policy name")
    )
}

#[test]
fn the_envoy_gateway_policy_exchanges_for_its_target_and_strips_elsewhere() {
    supported_envoy_version();
    let (policy, proxy) = (
        manifest("envoyextensionpolicy.yaml"),
        manifest("envoyproxy.yaml"),
    );
    assert_eq!(
        policy["spec"]["targetRefs"][0]["kind"], "Gateway",
        "on every route, so no route forwards the caller's own token"
    );
    let entry = policy["spec"]["dynamicModule"][0].clone();
    let config = entry["config"].clone();
    // The module the policy names is one the EnvoyProxy registers, with its SHA-256.
    let registered = proxy["spec"]["dynamicModules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == entry["name"])
        .expect("the policy's module registered in envoyproxy.yaml")
        .clone();
    let remote = &registered["source"]["remote"];
    assert!(remote["url"]
        .as_str()
        .is_some_and(|u| u.starts_with("https://") && u.ends_with("/libentra_obo_native.so")));
    assert!(remote["sha256"]
        .as_str()
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())));
    // The bootstrap the EnvoyProxy merges defines the policy's token_cluster.
    let bootstrap: Value = serde::Deserialize::deserialize(serde_norway::Deserializer::from_str(
        proxy["spec"]["bootstrap"]["value"]
            .as_str()
            .expect("a bootstrap"),
    ))
    .expect("YAML");
    let clusters = bootstrap["static_resources"]["clusters"]
        .as_array()
        .unwrap();
    assert!(clusters
        .iter()
        .any(|c| c["name"] == config["token_cluster"]));
    // Envoy's container has the AZURE_* variables the configuration takes its defaults from.
    let env = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"]["container"]["env"];
    for name in [
        "AZURE_APP_CLIENT_ID",
        "AZURE_APP_CLIENT_SECRET",
        "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT",
    ] {
        assert!(
            env.as_array().unwrap().iter().any(|v| v["name"] == name),
            "{name}"
        );
    }

    let idp = MockIdp::start();
    let name = filter_name(&policy);
    let filter = json!({
        "name": name,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {
                "module": {"local": {"filename": native_path()}},
                "do_not_close": registered["doNotClose"]
            },
            "filter_name": entry["filterName"],
            "filter_config": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": config.to_string()
            }
        }
    });
    let endpoint = idp.endpoint();
    let s = Stack::start_for(idp, json!({}), move |o| {
        native(o);
        o.vm_env = vec![
            ("AZURE_APP_CLIENT_ID".into(), CLIENT_ID.into()),
            ("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
            ("AZURE_OPENID_CONFIG_TOKEN_ENDPOINT".into(), endpoint),
        ];
        o.bootstrap_patch = Some(Box::new(move |b: &mut Value| {
            let hcm = &mut b["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
                ["typed_config"];
            hcm["http_filters"][0] = filter;
            hcm["route_config"]["virtual_hosts"][0]["routes"][0]["typed_per_filter_config"] = json!({
                name: {"@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig", "config": {}}
            });
        }));
    });
    let (subject, target) = (user_token("alice"), &config["targets"][0]);
    let (host, scope) = (
        target["host"].as_str().unwrap(),
        target["scope"].as_str().unwrap(),
    );
    assert_eq!(s.get(host, "/orders", Some(&bearer(&subject))).status, 200);
    assert_eq!(
        s.get("other.example.com", "/", Some(&bearer(&subject)))
            .status,
        200
    );
    let seen = s.upstream.seen();
    assert_eq!(
        seen[0].authorization,
        vec![bearer(&obo_token_for(&subject, scope))]
    );
    assert!(
        seen[1].authorization.is_empty(),
        "{:?}",
        seen[1].authorization
    );
}
