//! Envoy Gateway's way of loading the module, from the manifests in `envoy/gateway/`: the filter
//! as Envoy Gateway (v1.8 and later) writes it into Envoy's configuration for an
//! EnvoyExtensionPolicy's `dynamicModule` entry (`internal/xds/translator/dynamicmodule.go`): the
//! module by file name, the filter disabled in the connection manager and enabled on each route
//! the policy targets, its `config` handed over as JSON text. The Kubernetes side (the EnvoyProxy's
//! module file, fetched and checked by an init container; its Secret) is checked for what the
//! policy relies on.

use obo_e2e::client::bearer;
use obo_e2e::envoy::native_path;
use obo_e2e::mock_idp::{obo_token_for, MockIdp, CLIENT_ID, CLIENT_SECRET};
use obo_e2e::server::Server;
use obo_e2e::stack::{Stack, API_SCOPE};
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
    // The module the policy names is one the EnvoyProxy registers, from a local file: Envoy
    // forwards requests without the filter when a remote module's fetch or SHA-256 check fails.
    let registered = proxy["spec"]["dynamicModules"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == entry["name"])
        .expect("the policy's module registered in envoyproxy.yaml")
        .clone();
    assert_eq!(registered["source"]["type"], "Local");
    let path = registered["source"]["local"]["path"].as_str().unwrap();
    // That file is on a volume an init container writes, after checking its SHA-256.
    let deployment = &proxy["spec"]["provider"]["kubernetes"]["envoyDeployment"];
    let mounts = deployment["container"]["volumeMounts"].as_array().unwrap();
    let mount = mounts
        .iter()
        .find(|m| path.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the module's folder mounted in Envoy's container");
    let init = deployment["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| {
            c["volumeMounts"]
                .as_array()
                .is_some_and(|v| v.iter().any(|m| m["name"] == mount["name"]))
        })
        .expect("an init container that writes the module's volume");
    let command = init["command"].to_string();
    assert!(command.contains("sha256sum -c"), "{command}");
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

/// Serves `bytes` to any request, on a free loopback port, until dropped.
fn serve(bytes: Vec<u8>) -> Server {
    Server::start(axum::Router::new().fallback(move || {
        let bytes = bytes.clone();
        async move { bytes }
    }))
}

/// Why envoyproxy.yaml loads a local file: Envoy loads a module it fetches (`module.remote`) when
/// its SHA-256 matches, and when it does not, leaves the filter out and forwards requests without
/// it, the caller's own token included.
#[test]
fn envoy_forwards_without_a_fetched_module_whose_sha256_does_not_match() {
    supported_envoy_version();
    let module = std::fs::read(native_path()).expect("the module");
    let digest: String = {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(&module);
        hash.iter().map(|b| format!("{b:02x}")).collect()
    };
    let server = serve(module);
    let port = server.port;
    let subject = user_token("alice");
    for (sha256, filtered) in [(digest, true), ("0".repeat(64), false)] {
        let s = Stack::start_with(json!({}), move |o| {
            native(o);
            o.bootstrap_patch = Some(Box::new(move |b: &mut Value| {
                let resources = &mut b["static_resources"];
                let filter = &mut resources["listeners"][0]["filter_chains"][0]["filters"][0]
                    ["typed_config"]["http_filters"][0]["typed_config"];
                filter["dynamic_module_config"] = json!({
                    "module": {"remote": {
                        "http_uri": {
                            "uri": format!("http://127.0.0.1:{port}/libentra_obo_native.so"),
                            "cluster": "module_server",
                            "timeout": "5s"
                        },
                        "sha256": sha256
                    }},
                    "do_not_close": true
                });
                let clusters = resources["clusters"].as_array_mut().unwrap();
                clusters.push(obo_e2e::envoy::cluster("module_server", Some(port)));
            }));
        });
        assert_eq!(
            s.get("api.example.com", "/", Some(&bearer(&subject)))
                .status,
            200
        );
        let seen = s.upstream.seen()[0].authorization.clone();
        match filtered {
            true => assert_eq!(seen, vec![bearer(&obo_token_for(&subject, API_SCOPE))]),
            false => assert_eq!(seen, vec![bearer(&subject)], "{}", s.envoy.log()),
        }
    }
}
