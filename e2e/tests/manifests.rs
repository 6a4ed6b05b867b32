//! The Kubernetes manifests in envoy/istio/ and envoy/gateway/ hold only fields the APIs of their
//! kinds define, with values from their enums: a typo would be refused by the API server (or, in a
//! field it preserves, silently ignored) only when a user applies it.
//!
//! The shapes below are written from Istio's API (istio/api, `kubernetes/customresourcedefinitions.gen.yaml`)
//! and Envoy Gateway's (envoyproxy/gateway v1.8, `api/v1alpha1`): only the parts these manifests
//! use, and every field beside them at those levels.

use serde_json::Value;

/// What a value may be.
enum Shape {
    /// An object with these fields, each of its own shape.
    Object(&'static [(&'static str, Shape)]),
    /// A list of values of one shape.
    List(&'static Shape),
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// Anything (a map Istio passes on, a plugin's own configuration, a field not used here).
    Any,
}

use Shape::{Any, List, Object, OneOf};

const METADATA: Shape = Object(&[
    ("name", Any),
    ("namespace", Any),
    ("labels", Any),
    ("annotations", Any),
]);

const VM_CONFIG: Shape = Object(&[(
    "env",
    List(&Object(&[
        ("name", Any),
        ("value", Any),
        ("valueFrom", OneOf(&["INLINE", "HOST"])),
    ])),
)]);

const TRAFFIC_SELECTOR: Shape = List(&Object(&[
    (
        "mode",
        OneOf(&["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"]),
    ),
    ("ports", List(&Object(&[("number", Any)]))),
]));

const FAIL_STRATEGY: Shape = OneOf(&["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]);
const PULL_POLICY: Shape = OneOf(&["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]);
const PLUGIN_TYPE: Shape = OneOf(&["UNSPECIFIED_PLUGIN_TYPE", "HTTP", "NETWORK"]);
const TARGET_REF: Shape = Object(&[
    ("group", Any),
    ("kind", Any),
    ("name", Any),
    ("namespace", Any),
]);

const WASM_PLUGIN: Shape = Object(&[
    ("selector", Object(&[("matchLabels", Any)])),
    ("targetRef", TARGET_REF),
    ("targetRefs", List(&TARGET_REF)),
    ("url", Any),
    ("sha256", Any),
    ("imagePullPolicy", PULL_POLICY),
    ("imagePullSecret", Any),
    ("verificationKey", Any),
    ("pluginConfig", Any),
    ("pluginName", Any),
    (
        "phase",
        OneOf(&["UNSPECIFIED_PHASE", "AUTHN", "AUTHZ", "STATS"]),
    ),
    ("priority", Any),
    ("failStrategy", FAIL_STRATEGY),
    ("vmConfig", VM_CONFIG),
    ("match", TRAFFIC_SELECTOR),
    ("type", PLUGIN_TYPE),
]);

const TRAFFIC_EXTENSION: Shape = Object(&[
    ("selector", Object(&[("matchLabels", Any)])),
    ("targetRefs", List(&TARGET_REF)),
    ("phase", OneOf(&["UNSPECIFIED", "AUTHN", "AUTHZ", "STATS"])),
    ("priority", Any),
    ("match", TRAFFIC_SELECTOR),
    (
        "wasm",
        Object(&[
            ("url", Any),
            ("sha256", Any),
            ("imagePullPolicy", PULL_POLICY),
            ("imagePullSecret", Any),
            ("verificationKey", Any),
            ("pluginConfig", Any),
            ("pluginName", Any),
            ("failStrategy", FAIL_STRATEGY),
            ("vmConfig", VM_CONFIG),
            ("type", PLUGIN_TYPE),
        ]),
    ),
    ("lua", Object(&[("inlineCode", Any)])),
]);

const ENVOY_FILTER: Shape = Object(&[
    ("workloadSelector", Object(&[("labels", Any)])),
    ("targetRefs", List(&TARGET_REF)),
    ("priority", Any),
    (
        "configPatches",
        List(&Object(&[
            (
                "applyTo",
                OneOf(&[
                    "INVALID",
                    "LISTENER",
                    "FILTER_CHAIN",
                    "NETWORK_FILTER",
                    "HTTP_FILTER",
                    "ROUTE_CONFIGURATION",
                    "VIRTUAL_HOST",
                    "HTTP_ROUTE",
                    "CLUSTER",
                    "EXTENSION_CONFIG",
                    "BOOTSTRAP",
                    "LISTENER_FILTER",
                ]),
            ),
            (
                "match",
                Object(&[
                    (
                        "context",
                        OneOf(&[
                            "ANY",
                            "SIDECAR_INBOUND",
                            "SIDECAR_OUTBOUND",
                            "GATEWAY",
                            "WAYPOINT",
                        ]),
                    ),
                    ("proxy", Any),
                    (
                        "listener",
                        Object(&[
                            ("portNumber", Any),
                            ("portName", Any),
                            ("name", Any),
                            ("listenerFilter", Any),
                            (
                                "filterChain",
                                Object(&[
                                    ("name", Any),
                                    ("sni", Any),
                                    ("transportProtocol", Any),
                                    ("applicationProtocols", Any),
                                    ("destinationPort", Any),
                                    (
                                        "filter",
                                        Object(&[
                                            ("name", Any),
                                            ("subFilter", Object(&[("name", Any)])),
                                        ]),
                                    ),
                                ]),
                            ),
                        ]),
                    ),
                    ("routeConfiguration", Any),
                    ("cluster", Any),
                    ("waypoint", Any),
                ]),
            ),
            (
                "patch",
                Object(&[
                    (
                        "operation",
                        OneOf(&[
                            "INVALID",
                            "MERGE",
                            "ADD",
                            "REMOVE",
                            "INSERT_BEFORE",
                            "INSERT_AFTER",
                            "INSERT_FIRST",
                            "REPLACE",
                            "MERGE_AND_REPLACE_LIST",
                        ]),
                    ),
                    ("value", Any),
                    ("filterClass", Any),
                ]),
            ),
        ])),
    ),
]);

const SERVICE_ENTRY: Shape = Object(&[
    ("hosts", Any),
    ("addresses", Any),
    (
        "ports",
        List(&Object(&[
            ("number", Any),
            ("protocol", Any),
            ("name", Any),
            ("targetPort", Any),
        ])),
    ),
    ("location", OneOf(&["MESH_EXTERNAL", "MESH_INTERNAL"])),
    (
        "resolution",
        OneOf(&["NONE", "STATIC", "DNS", "DNS_ROUND_ROBIN", "DYNAMIC_DNS"]),
    ),
    ("endpoints", Any),
    ("workloadSelector", Any),
    ("exportTo", Any),
    ("subjectAltNames", Any),
]);

const TLS: Shape = Object(&[
    (
        "mode",
        OneOf(&["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"]),
    ),
    ("clientCertificate", Any),
    ("privateKey", Any),
    ("caCertificates", Any),
    ("credentialName", Any),
    ("subjectAltNames", Any),
    ("sni", Any),
    ("insecureSkipVerify", Any),
    ("caCrl", Any),
]);

const DESTINATION_RULE: Shape = Object(&[
    ("host", Any),
    (
        "trafficPolicy",
        Object(&[
            ("loadBalancer", Any),
            ("connectionPool", Any),
            ("outlierDetection", Any),
            ("tls", TLS),
            (
                "portLevelSettings",
                List(&Object(&[
                    ("port", Object(&[("number", Any)])),
                    ("loadBalancer", Any),
                    ("connectionPool", Any),
                    ("outlierDetection", Any),
                    ("tls", TLS),
                ])),
            ),
            ("tunnel", Any),
            ("proxyProtocol", Any),
            ("retryBudget", Any),
        ]),
    ),
    ("subsets", Any),
    ("exportTo", Any),
    ("workloadSelector", Any),
]);

/// Envoy Gateway v1.8's policy target (a Gateway or a route, by name in the policy's namespace).
const EG_TARGET_REF: Shape = Object(&[
    ("group", Any),
    ("kind", Any),
    ("name", Any),
    ("sectionName", Any),
]);

const ENVOY_EXTENSION_POLICY: Shape = Object(&[
    ("targetRef", EG_TARGET_REF),
    ("targetRefs", List(&EG_TARGET_REF)),
    ("targetSelectors", Any),
    ("wasm", Any),
    ("extProc", Any),
    ("lua", Any),
    (
        "dynamicModule",
        List(&Object(&[
            ("name", Any),
            ("filterName", Any),
            ("config", Any),
            ("terminalFilter", Any),
        ])),
    ),
]);

const ENVOY_DEPLOYMENT: Shape = Object(&[
    ("patch", Any),
    ("replicas", Any),
    ("strategy", Any),
    ("pod", Any),
    (
        "container",
        Object(&[
            ("env", Any),
            ("resources", Any),
            ("securityContext", Any),
            ("image", Any),
            ("imageRepository", Any),
            ("volumeMounts", Any),
        ]),
    ),
    ("initContainers", Any),
    ("name", Any),
]);

const DYNAMIC_MODULE_ENTRY: Shape = Object(&[
    ("name", Any),
    (
        "source",
        Object(&[
            ("type", OneOf(&["Local", "Remote"])),
            ("local", Object(&[("path", Any)])),
            ("remote", Object(&[("url", Any), ("sha256", Any)])),
        ]),
    ),
    ("doNotClose", Any),
    ("loadGlobally", Any),
]);

const ENVOY_PROXY: Shape = Object(&[
    (
        "provider",
        Object(&[
            ("type", OneOf(&["Kubernetes", "Host"])),
            (
                "kubernetes",
                Object(&[
                    ("envoyDeployment", ENVOY_DEPLOYMENT),
                    ("envoyDaemonSet", Any),
                    ("envoyService", Any),
                    ("envoyHpa", Any),
                    ("useListenerPortAsContainerPort", Any),
                    ("envoyPDB", Any),
                    ("envoyServiceAccount", Any),
                ]),
            ),
            ("host", Any),
        ]),
    ),
    ("logging", Any),
    ("telemetry", Any),
    (
        "bootstrap",
        Object(&[
            ("type", OneOf(&["Merge", "Replace", "JSONPatch"])),
            ("value", Any),
            ("jsonPatches", Any),
        ]),
    ),
    ("concurrency", Any),
    ("routingType", Any),
    ("extraArgs", Any),
    ("mergeGateways", Any),
    ("shutdown", Any),
    ("filterOrder", Any),
    ("backendTLS", Any),
    ("ipFamily", Any),
    ("preserveRouteOrder", Any),
    ("luaValidation", Any),
    ("dynamicModules", List(&DYNAMIC_MODULE_ENTRY)),
    ("geoIP", Any),
    ("mergeType", Any),
]);

/// The Istio and Envoy Gateway kinds shipped, with the API versions that serve them and their
/// spec's shape.
const KINDS: &[(&str, &[&str], &Shape)] = &[
    (
        "EnvoyProxy",
        &["gateway.envoyproxy.io/v1alpha1"],
        &ENVOY_PROXY,
    ),
    (
        "EnvoyExtensionPolicy",
        &["gateway.envoyproxy.io/v1alpha1"],
        &ENVOY_EXTENSION_POLICY,
    ),
    (
        "WasmPlugin",
        &["extensions.istio.io/v1alpha1"],
        &WASM_PLUGIN,
    ),
    (
        "TrafficExtension",
        &["extensions.istio.io/v1alpha1"],
        &TRAFFIC_EXTENSION,
    ),
    (
        "EnvoyFilter",
        &["networking.istio.io/v1alpha3"],
        &ENVOY_FILTER,
    ),
    (
        "ServiceEntry",
        &["networking.istio.io/v1", "networking.istio.io/v1beta1"],
        &SERVICE_ENTRY,
    ),
    (
        "DestinationRule",
        &["networking.istio.io/v1", "networking.istio.io/v1beta1"],
        &DESTINATION_RULE,
    ),
];

fn check(value: &Value, shape: &Shape, path: &str, problems: &mut Vec<String>) {
    match (shape, value) {
        (Any, _) => {}
        (Object(fields), Value::Object(map)) => {
            for (key, item) in map {
                match fields.iter().find(|(name, _)| name == key) {
                    Some((_, inner)) => check(item, inner, &format!("{path}.{key}"), problems),
                    None => problems.push(format!("{path}.{key}: not a field here")),
                }
            }
        }
        (List(inner), Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check(item, inner, &format!("{path}[{i}]"), problems);
            }
        }
        (OneOf(allowed), Value::String(s)) if allowed.contains(&s.as_str()) => {}
        (OneOf(allowed), other) => {
            problems.push(format!("{path}: {other} is none of {allowed:?}"));
        }
        (_, other) => problems.push(format!("{path}: {other} has the wrong type")),
    }
}

fn manifests() -> Vec<(String, Value)> {
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join("envoy");
    let mut out = Vec::new();
    let entries = ["istio", "gateway"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).expect("a manifest folder"));
    for entry in entries {
        let path = entry.expect("an entry").path();
        let text = std::fs::read_to_string(&path).expect("a manifest");
        for document in serde_norway::Deserializer::from_str(&text) {
            let doc: Value = serde::Deserialize::deserialize(document).expect("YAML");
            if !doc.is_null() {
                out.push((
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    doc,
                ));
            }
        }
    }
    out
}

#[test]
fn every_manifest_holds_only_fields_its_api_defines() {
    let mut problems = Vec::new();
    let mut checked = Vec::new();
    for (file, doc) in manifests() {
        let kind = doc["kind"].as_str().unwrap_or_default();
        let Some((_, versions, shape)) = KINDS.iter().find(|(k, _, _)| *k == kind) else {
            continue;
        };
        let api_version = doc["apiVersion"].as_str().unwrap_or_default();
        if !versions.contains(&api_version) {
            problems.push(format!("{file}: {kind} is not served as {api_version}"));
        }
        for (key, value) in doc.as_object().into_iter().flatten() {
            match key.as_str() {
                "apiVersion" | "kind" => {}
                "metadata" => check(
                    value,
                    &METADATA,
                    &format!("{file}: metadata"),
                    &mut problems,
                ),
                "spec" => check(value, shape, &format!("{file}: spec"), &mut problems),
                other => problems.push(format!("{file}: {other}: not a field of a {kind}")),
            }
        }
        checked.push(kind.to_string());
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    checked.sort();
    assert_eq!(
        checked,
        [
            "DestinationRule",
            "EnvoyExtensionPolicy",
            "EnvoyFilter",
            "EnvoyFilter",
            "EnvoyProxy",
            "ServiceEntry",
            "TrafficExtension",
            "WasmPlugin",
            "WasmPlugin"
        ]
    );
}

#[test]
fn an_unknown_field_or_value_is_caught() {
    let doc: Value =
        serde_json::json!({"wasm": {"url": "oci://x", "failStrategy": "FAIL_SOFT", "sha": "x"}});
    let mut problems = Vec::new();
    check(&doc, &TRAFFIC_EXTENSION, "spec", &mut problems);
    assert_eq!(problems.len(), 2, "{problems:?}");
}
