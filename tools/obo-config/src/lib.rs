//! Finds entra-obo-filter plugin configurations in a file (raw JSON, an Envoy bootstrap with the
//! .wasm or the native module, an Istio `EnvoyFilter` or `WasmPlugin`, an Envoy Gateway
//! `EnvoyExtensionPolicy`) and checks each with the filter's own parser, under the
//! environment the filter's VM would see.

use std::cell::RefCell;
use std::collections::BTreeMap;

use obo_core::config::{
    self, ConfigError, ENV_CLIENT_JWK, ENV_TOKEN_ENDPOINT, ENV_TOKEN_X_ENDPOINT, ENV_TOKEN_X_JWK,
    ENV_WI_AUTHORITY_HOST,
};
use serde_json::Value;

mod routes;

/// One plugin configuration found in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Where in the document it sits (`spec.pluginConfig`, ...); empty for a raw configuration.
    pub location: String,
    /// The configuration as the filter receives it.
    pub text: String,
    /// The environment the VM declares: `None` for a raw configuration (the check's own
    /// environment applies), else each declared variable with its inline value, if any.
    pub vm_env: Option<BTreeMap<String, Option<String>>>,
    /// The `route_config` of the Envoy connection manager the filter is in, when the file has it
    /// (not for Istio resources or routes from RDS).
    pub routes: Option<Value>,
    /// The bootstrap's clusters, when the file has all of them (static ones, and no CDS).
    pub clusters: Option<Value>,
    /// The bootstrap's static listeners, when it has clusters.
    pub listeners: Option<Value>,
    /// Why the loader lets requests through without the filter, if it does: its VM fails open
    /// (Envoy's `failure_policy: FAIL_OPEN` or `fail_open`, Istio's `failStrategy: FAIL_OPEN`), or
    /// the native module is fetched (`module.remote`). The check's warning.
    pub fails_open: Option<&'static str>,
}

/// Where the check takes environment values from.
#[derive(Debug, Clone, Default)]
pub struct CheckEnv {
    /// `--env NAME=VALUE`: wins over everything else.
    pub overrides: BTreeMap<String, String>,
    /// The checking process's own environment (stands in for the proxy's host environment).
    pub host: BTreeMap<String, String>,
    /// `--assume-env`: a variable with no value gets a placeholder, so a configuration can be
    /// checked in CI without its secrets.
    pub assume: bool,
}

/// The result of checking one configuration.
#[derive(Debug)]
pub struct Report {
    pub location: String,
    /// On success, a one-line summary.
    pub result: Result<String, Vec<ConfigError>>,
    /// Variables that got a placeholder value (`--assume-env`).
    pub assumed: Vec<String>,
    /// What in the Envoy configuration around a valid plugin configuration could send a target's
    /// token elsewhere, each with where it is.
    pub warnings: Vec<String>,
}

const VM_FAILS_OPEN: &str = "the loader fails open (FAIL_OPEN): if the filter's VM fails, \
     requests go on without it, and the employee's own token with them; use failure_policy: \
     FAIL_CLOSED (Istio: failStrategy: FAIL_CLOSE)";

const MODULE_FETCHED: &str = "the module is fetched (module.remote): when the fetch or its \
     SHA-256 check fails, Envoy forwards requests without the filter, and the employee's own \
     token with them; load it from a local file (module.local) checked before Envoy starts";

/// Keys that mark a document as something other than a raw plugin configuration.
const CONTAINER_KEYS: &[&str] = &[
    "apiVersion",
    "kind",
    "static_resources",
    "dynamic_resources",
    "admin",
    "node",
    "services",
];

/// Every plugin configuration in `text`. A document that is neither an Envoy nor a Kubernetes
/// document is taken as a raw plugin configuration.
pub fn find_plugin_configs(text: &str) -> Result<Vec<Found>, String> {
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') {
        // JSON: a raw configuration unless it is an Envoy bootstrap written in JSON. Parse errors
        // come from the filter's parser, as the filter would report them.
        return Ok(match obo_core::json::parse(text) {
            Ok(doc) if is_container(&doc) => embedded(&doc),
            _ => vec![raw(text.to_string())],
        });
    }
    let mut found = Vec::new();
    for document in serde_norway::Deserializer::from_str(text) {
        let doc: Value = serde::Deserialize::deserialize(document)
            .map_err(|e| format!("not valid YAML or JSON: {e}"))?;
        if doc.is_null() {
            continue;
        }
        if is_container(&doc) {
            found.extend(embedded(&doc));
        } else {
            found.push(raw(doc.to_string()));
        }
    }
    Ok(found)
}

fn raw(text: String) -> Found {
    Found {
        location: String::new(),
        text,
        vm_env: None,
        routes: None,
        clusters: None,
        listeners: None,
        fails_open: None,
    }
}

fn is_container(doc: &Value) -> bool {
    doc.as_object()
        .is_some_and(|m| CONTAINER_KEYS.iter().any(|k| m.contains_key(*k)))
}

fn embedded(doc: &Value) -> Vec<Found> {
    let mut out = Vec::new();
    walk(doc, &mut String::new(), None, &mut out);
    let clusters = doc
        .pointer("/static_resources/clusters")
        .filter(|_| doc.pointer("/dynamic_resources/cds_config").is_none())
        .cloned();
    let listeners = doc.pointer("/static_resources/listeners").cloned();
    for found in &mut out {
        found.clusters = clusters.clone();
        found.listeners = clusters.as_ref().and(listeners.clone());
    }
    out
}

/// Envoy's `configuration: {value: "<json>"}` next to `vm_config`, and Istio's `pluginConfig`
/// next to `vmConfig`. `routes`: the `route_config` of the connection manager being walked.
fn walk(value: &Value, path: &mut String, routes: Option<&Value>, out: &mut Vec<Found>) {
    match value {
        Value::Object(map) => {
            if let Some(text) = map
                .get("configuration")
                .and_then(|c| c.get("value"))
                .and_then(Value::as_str)
            {
                out.push(Found {
                    location: join(path, "configuration"),
                    text: text.to_string(),
                    vm_env: Some(envoy_vm_env(map.get("vm_config"))),
                    routes: routes.cloned(),
                    clusters: None,
                    listeners: None,
                    fails_open: (map.get("failure_policy").and_then(Value::as_str)
                        == Some("FAIL_OPEN")
                        || map.get("fail_open").and_then(Value::as_bool) == Some(true))
                    .then_some(VM_FAILS_OPEN),
                });
                return;
            }
            if let Some(plugin_config) = map.get("pluginConfig").filter(|v| v.is_object()) {
                out.push(Found {
                    location: join(path, "pluginConfig"),
                    text: plugin_config.to_string(),
                    vm_env: Some(istio_vm_env(map.get("vmConfig"))),
                    routes: None,
                    clusters: None,
                    listeners: None,
                    fails_open: (map.get("failStrategy").and_then(Value::as_str)
                        == Some("FAIL_OPEN"))
                    .then_some(VM_FAILS_OPEN),
                });
                return;
            }
            // The native build: Envoy's dynamic-module filter, or an Envoy Gateway
            // EnvoyExtensionPolicy's `dynamicModule` entry. The module reads Envoy's own
            // environment, so every variable of the proxy's reaches it.
            if let Some(config) = native_config(map) {
                // Envoy leaves a remote module's filter out, and forwards requests without it,
                // when the fetch or the SHA-256 check fails.
                let remote = map
                    .get("dynamic_module_config")
                    .and_then(|m| m.pointer("/module/remote"));
                out.push(Found {
                    location: join(path, config.0),
                    text: config.1,
                    vm_env: None,
                    routes: routes.cloned(),
                    clusters: None,
                    listeners: None,
                    fails_open: remote.map(|_| MODULE_FETCHED),
                });
                return;
            }
            // A connection manager: its filters are the ones its routes apply to.
            let routes = match map.get("http_filters") {
                Some(_) => map.get("route_config"),
                None => routes,
            };
            for (key, item) in map {
                let len = path.len();
                *path = join(path, key);
                walk(item, path, routes, out);
                path.truncate(len);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path, routes, out);
                path.truncate(len);
            }
        }
        _ => {}
    }
}

/// The native module's configuration in `map`, with its key: `filter_config` beside
/// `dynamic_module_config` (Envoy), or `config` beside `filterName` (Envoy Gateway), where the
/// filter is named `entra_obo` or (Envoy) the module is `entra_obo_native`.
fn native_config(map: &serde_json::Map<String, Value>) -> Option<(&'static str, String)> {
    let named_ours = |key: &str| map.get(key).and_then(Value::as_str) == Some("entra_obo");
    if let Some(module) = map.get("dynamic_module_config") {
        let module_is_ours = module.get("name").and_then(Value::as_str) == Some("entra_obo_native")
            || ["/module/local/filename", "/module/remote/http_uri/uri"]
                .iter()
                .filter_map(|at| module.pointer(at).and_then(Value::as_str))
                .any(|file| file.ends_with("libentra_obo_native.so"));
        if !(named_ours("filter_name") || module_is_ours) {
            return None;
        }
        // google.protobuf.StringValue holds the JSON as text; Struct as an object.
        let text = match map.get("filter_config")?.get("value")? {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        return Some(("filter_config", text));
    }
    let config = map.get("config").filter(|c| c.is_object())?;
    named_ours("filterName").then(|| ("config", config.to_string()))
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `vm_config.environment_variables`: `host_env_keys` (from the proxy's environment) and
/// `key_values` (inline).
fn envoy_vm_env(vm_config: Option<&Value>) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    let Some(vars) = vm_config.and_then(|v| v.get("environment_variables")) else {
        return env;
    };
    for key in vars
        .get("host_env_keys")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        env.insert(key.to_string(), None);
    }
    for (key, value) in vars
        .get("key_values")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        env.insert(key.clone(), value.as_str().map(str::to_string));
    }
    env
}

/// `vmConfig.env`: `{name, value}` (inline) or `{name, valueFrom: HOST}`.
fn istio_vm_env(vm_config: Option<&Value>) -> BTreeMap<String, Option<String>> {
    let mut env = BTreeMap::new();
    for var in vm_config
        .and_then(|v| v.get("env"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(name) = var.get("name").and_then(Value::as_str) else {
            continue;
        };
        let from_host = var.get("valueFrom").and_then(Value::as_str) == Some("HOST");
        let value = if from_host {
            None
        } else {
            var.get("value").and_then(Value::as_str).map(str::to_string)
        };
        env.insert(name.to_string(), value);
    }
    env
}

/// Checks one configuration with the filter's parser.
pub fn check(found: &Found, env: &CheckEnv) -> Report {
    let assumed = RefCell::new(Vec::new());
    let lookup = |name: &str| -> Option<String> {
        if let Some(v) = env.overrides.get(name) {
            return Some(v.clone());
        }
        let visible = match &found.vm_env {
            // Only what the VM declares reaches the filter.
            Some(declared) => match declared.get(name) {
                Some(Some(inline)) => return Some(inline.clone()),
                Some(None) => env.host.get(name).cloned(),
                None => return None,
            },
            None => env.host.get(name).cloned(),
        };
        visible.filter(|v| !v.is_empty()).or_else(|| {
            // An optional variable: a placeholder would change what the filter does.
            let declared = found.vm_env.as_ref().is_some_and(|d| d.contains_key(name));
            let placeholder_fits = !OPTIONAL_VARIABLES.contains(&name)
                && (declared || !WORKLOAD_IDENTITY_VARIABLES.contains(&name));
            (env.assume && placeholder_fits).then(|| {
                assumed.borrow_mut().push(name.to_string());
                placeholder(name)
            })
        })
    };
    let parsed = config::parse(found.text.as_bytes(), &lookup)
        .map_err(|errors| undeclared_variables(found, errors.iter().cloned().collect()));
    let mut warnings = inline_secrets(found);
    if let Some(warning) = found.fails_open {
        warnings.push(warning.to_string());
    }
    let result = match parsed {
        Err(errors) => Err(errors),
        Ok(cfg) => {
            if let Some(routes) = &found.routes {
                warnings.extend(routes::warnings(&cfg, routes));
            }
            let missing = match &found.clusters {
                Some(clusters) => {
                    warnings.extend(routes::cluster_warnings(&cfg, clusters));
                    let listeners = found.listeners.as_ref().unwrap_or(&Value::Null);
                    warnings.extend(routes::source_warnings(&cfg, clusters, listeners));
                    routes::missing_clusters(&cfg, clusters)
                }
                None => Vec::new(),
            };
            if missing.is_empty() {
                Ok(config::summary(&cfg))
            } else {
                Err(missing)
            }
        }
    };
    let mut assumed = assumed.into_inner();
    assumed.sort();
    assumed.dedup();
    Report {
        location: found.location.clone(),
        result,
        assumed,
        warnings,
    }
}

/// Variables `--assume-env` leaves unset: with a placeholder the filter would do something else
/// (use a key), or nothing the check needs (the authority host has a default).
const OPTIONAL_VARIABLES: &[&str] = &[ENV_CLIENT_JWK, config::ENV_WI_AUTHORITY_HOST];

/// Workload identity's variables get a placeholder only where the VM declares them: elsewhere they
/// would turn a configuration that is missing its credential into one that uses workload identity.
const WORKLOAD_IDENTITY_VARIABLES: &[&str] = &[
    config::ENV_WI_TOKEN_FILE,
    config::ENV_WI_CLIENT_ID,
    config::ENV_WI_TENANT_ID,
];

/// The variables the filter reads by default.
const DEFAULT_VARIABLES: &[&str] = &[
    ENV_TOKEN_ENDPOINT,
    config::ENV_CLIENT_ID,
    config::ENV_CLIENT_SECRET,
    ENV_CLIENT_JWK,
    ENV_TOKEN_X_ENDPOINT,
    config::ENV_TOKEN_X_CLIENT_ID,
    ENV_TOKEN_X_JWK,
    config::ENV_WI_CLIENT_ID,
    config::ENV_WI_TENANT_ID,
    config::ENV_WI_TOKEN_FILE,
];

/// A problem that names an environment variable the VM does not declare says so: the variable
/// may well be set where the check runs (and in the proxy), yet the filter never sees it.
fn undeclared_variables(found: &Found, mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    let Some(declared) = &found.vm_env else {
        return errors;
    };
    for error in &mut errors {
        let missing: Vec<&str> = DEFAULT_VARIABLES
            .iter()
            .copied()
            .filter(|name| error.problem.contains(name) && !declared.contains_key(*name))
            .collect();
        if !missing.is_empty() {
            error.problem.push_str(&format!(
                " (the VM does not declare {}: add it to vm_config.environment_variables.\
                 host_env_keys, or to vmConfig.env with valueFrom: HOST)",
                missing.join(" or ")
            ));
        }
    }
    errors
}

/// The environment variables that hold a credential.
const CREDENTIAL_VARIABLES: &[&str] = &[config::ENV_CLIENT_SECRET, ENV_CLIENT_JWK, ENV_TOKEN_X_JWK];

/// A credential written into the configuration itself, where Envoy's config dump shows it: a
/// `client_secret` or `client_jwk` that is not `${NAME}`, or a credential variable given an
/// inline value.
fn inline_secrets(found: &Found) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(Value::Object(top)) = obo_core::json::parse(&found.text) else {
        return out;
    };
    let mut providers: Vec<(String, &serde_json::Map<String, Value>)> = vec![(String::new(), &top)];
    if let Some(Value::Object(named)) = top.get("providers") {
        for (name, provider) in named {
            if let Value::Object(fields) = provider {
                providers.push((format!("providers.{name}."), fields));
            }
        }
    }
    for (prefix, fields) in providers {
        for field in ["client_secret", "client_jwk"] {
            let reference = fields
                .get(field)
                .and_then(Value::as_str)
                .is_some_and(|v| v.starts_with("${") && v.ends_with('}'));
            if fields.contains_key(field) && !reference {
                out.push(format!(
                    "{prefix}{field}: written into the configuration, where anyone who can read \
                     Envoy's config dump sees it; leave it out to use the environment variable, \
                     passed with vm_config.environment_variables.host_env_keys (Istio: valueFrom: HOST)"
                ));
            }
        }
    }
    let inline_variables =
        found.vm_env.iter().flatten().filter(|(name, value)| {
            value.is_some() && CREDENTIAL_VARIABLES.contains(&name.as_str())
        });
    for (name, _) in inline_variables {
        out.push(format!(
            "{name}: given an inline value (key_values, or a vmConfig.env value), which Envoy's \
             config dump shows; pass it from the proxy's environment with host_env_keys (Istio: \
             valueFrom: HOST)"
        ));
    }
    out
}

fn placeholder(name: &str) -> String {
    match name {
        ENV_TOKEN_ENDPOINT => {
            "https://login.microsoftonline.com/placeholder-tenant/oauth2/v2.0/token".to_string()
        }
        ENV_TOKEN_X_ENDPOINT => "https://tokenx.placeholder.example/token".to_string(),
        // The token endpoint is made from it: a URL.
        ENV_WI_AUTHORITY_HOST => "https://login.microsoftonline.com/".to_string(),
        ENV_TOKEN_X_JWK => throwaway_jwk().to_string(),
        _ => format!("placeholder-{name}"),
    }
}

/// A private key made for this check only, so a configuration that needs one can be checked
/// without the real one.
fn throwaway_jwk() -> &'static str {
    static JWK: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    JWK.get_or_init(|| {
        let Ok(key) = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048) else {
            return String::new();
        };
        obo_core::client_assertion::private_jwk(&key, serde_json::json!({"kid": "placeholder"}))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RAW: &str = r#"{"token_cluster": "entra_id", "targets": [{"host": "a.example", "scope": "api://a/.default"}]}"#;

    /// A dynamic-module filter in an Envoy bootstrap, with `filter_name` and `module` given.
    fn native_bootstrap(filter_name: &str, module: &str) -> String {
        format!(
            r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          http_filters:
          - name: obo
            typed_config:
              dynamic_module_config: {module}
              filter_name: {filter_name}
              filter_config:
                "@type": type.googleapis.com/google.protobuf.StringValue
                value: '{RAW}'
"#
        )
    }

    #[test]
    fn the_native_module_is_found_by_its_filter_name_or_its_module() {
        for (filter_name, module) in [
            ("entra_obo", "{name: whatever}"),
            ("other", "{name: entra_obo_native}"),
            (
                "other",
                "{module: {local: {filename: /m/libentra_obo_native.so}}}",
            ),
        ] {
            let found = find_plugin_configs(&native_bootstrap(filter_name, module)).unwrap();
            assert_eq!(found.len(), 1, "{filter_name} {module}");
            assert!(found[0].location.ends_with("typed_config.filter_config"));
            assert_eq!(found[0].text, RAW);
            // The module reads Envoy's own environment, as a raw configuration's check does.
            assert_eq!(found[0].vm_env, None);
            assert!(check(&found[0], &host_env()).result.is_ok());
        }
        // A module Envoy fetches is warned about: it fails open.
        let remote = native_bootstrap(
            "entra_obo",
            "{module: {remote: {http_uri: {uri: 'https://x/libentra_obo_native.so'}, sha256: x}}}",
        );
        let found = find_plugin_configs(&remote).unwrap();
        let report = check(&found[0], &host_env());
        assert!(report.result.is_ok());
        assert!(
            report.warnings.iter().any(|w| w.contains("module.remote")),
            "{:?}",
            report.warnings
        );
        // Another module's configuration is not this filter's.
        let other = native_bootstrap("waf", "{name: coraza}");
        assert!(find_plugin_configs(&other).unwrap().is_empty());
    }

    #[test]
    fn an_envoy_gateway_policy_entry_named_entra_obo_is_found() {
        let policy = format!(
            r#"
apiVersion: gateway.envoyproxy.io/v1alpha1
kind: EnvoyExtensionPolicy
spec:
  dynamicModule:
  - name: waf
    filterName: coraza
    config: {{directives: []}}
  - name: entra-obo
    filterName: entra_obo
    config: {RAW}
"#
        );
        let found = find_plugin_configs(&policy).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "spec.dynamicModule[1].config");
        assert!(check(&found[0], &host_env()).result.is_ok());
    }

    fn host_env() -> CheckEnv {
        CheckEnv {
            host: [
                ("AZURE_APP_CLIENT_ID", "id"),
                ("AZURE_APP_CLIENT_SECRET", "secret"),
                (
                    "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT",
                    "https://login.example/t/oauth2/v2.0/token",
                ),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
            ..CheckEnv::default()
        }
    }

    fn fields(report: &Report) -> Vec<String> {
        report
            .result
            .as_ref()
            .unwrap_err()
            .iter()
            .map(|e| e.field.clone())
            .collect()
    }

    #[test]
    fn raw_json_is_one_configuration_checked_with_the_host_environment() {
        let found = find_plugin_configs(RAW).unwrap();
        assert_eq!(found.len(), 1);
        assert!(check(&found[0], &host_env()).result.is_ok());
        let report = check(&found[0], &CheckEnv::default());
        assert_eq!(
            fields(&report),
            ["token_endpoint", "client_id", "client_secret"]
        );
    }

    #[test]
    fn broken_json_reports_the_filters_json_error() {
        let found = find_plugin_configs("{\"token_cluster\": ").unwrap();
        let report = check(&found[0], &host_env());
        let errors = report.result.unwrap_err();
        assert!(errors[0].problem.contains("not valid JSON"), "{errors:?}");
    }

    #[test]
    fn istio_plugin_config_sees_only_the_variables_its_vm_declares() {
        let yaml = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
spec:
  pluginConfig:
    token_cluster: entra_id
    client_id: ${UNDECLARED}
    targets: [{host: a.example, scope: "api://a/.default"}]
  vmConfig:
    env:
    - {name: AZURE_APP_CLIENT_SECRET, valueFrom: HOST}
    - {name: AZURE_OPENID_CONFIG_TOKEN_ENDPOINT, value: "https://login.example/t/oauth2/v2.0/token"}
    - {name: UNDECLARED_ELSEWHERE, value: x}
"#;
        let mut env = host_env();
        env.host.insert("UNDECLARED".into(), "in-host-env".into());
        let found = find_plugin_configs(yaml).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].location, "spec.pluginConfig");
        // UNDECLARED is in the host environment but not declared: the VM would not see it.
        assert_eq!(fields(&check(&found[0], &env)), ["client_id"]);
    }

    #[test]
    fn envoy_configuration_string_is_found_with_its_environment() {
        let yaml = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          http_filters:
          - typed_config:
              config:
                vm_config:
                  environment_variables:
                    host_env_keys: [AZURE_APP_CLIENT_SECRET]
                    key_values:
                      AZURE_APP_CLIENT_ID: inline-id
                      AZURE_OPENID_CONFIG_TOKEN_ENDPOINT: https://login.example/t/oauth2/v2.0/token
                configuration:
                  value: '{"token_cluster": "entra_id", "targets": [{"host": "a.example", "scope": "api://a/.default"}]}'
"#;
        let found = find_plugin_configs(yaml).unwrap();
        assert_eq!(found.len(), 1);
        assert!(found[0].location.ends_with("config.configuration"));
        assert!(check(&found[0], &host_env()).result.is_ok());
        // The secret comes from the host: without it, the check names it.
        assert_eq!(
            fields(&check(&found[0], &CheckEnv::default())),
            ["client_secret"]
        );
    }

    #[test]
    fn assume_env_fills_placeholders_and_says_which() {
        let found = find_plugin_configs(RAW).unwrap();
        let env = CheckEnv {
            assume: true,
            ..CheckEnv::default()
        };
        let report = check(&found[0], &env);
        assert!(report.result.is_ok(), "{:?}", report.result);
        assert_eq!(
            report.assumed,
            [
                "AZURE_APP_CLIENT_ID",
                "AZURE_APP_CLIENT_SECRET",
                "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT"
            ]
        );
    }

    #[test]
    fn overrides_win_over_inline_values() {
        let mut env = host_env();
        env.overrides
            .insert("AZURE_APP_CLIENT_ID".into(), String::new());
        let report = check(&find_plugin_configs(RAW).unwrap()[0], &env);
        assert_eq!(fields(&report), ["client_id"]);
    }

    #[test]
    fn a_credential_variable_with_an_inline_value_is_warned_about() {
        let yaml = r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          http_filters:
          - typed_config:
              config:
                vm_config:
                  environment_variables:
                    key_values:
                      AZURE_APP_CLIENT_SECRET: inline-secret
                      AZURE_APP_CLIENT_ID: inline-id
                configuration:
                  value: '{"token_cluster": "entra_id", "targets": [{"host": "a.example", "scope": "api://a/.default"}]}'
"#;
        let found = find_plugin_configs(yaml).unwrap();
        let report = check(&found[0], &host_env());
        assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
        assert!(report.warnings[0].starts_with("AZURE_APP_CLIENT_SECRET: given an inline value"));
        assert!(!report.warnings[0].contains("inline-secret"));
    }

    #[test]
    fn a_default_variable_the_vm_does_not_declare_is_named_as_undeclared() {
        let yaml = r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
spec:
  failStrategy: FAIL_OPEN
  pluginConfig:
    token_cluster: entra_id
    targets: [{host: a.example, scope: "api://a/.default"}]
  vmConfig:
    env:
    - {name: AZURE_APP_CLIENT_ID, valueFrom: HOST}
    - {name: AZURE_APP_CLIENT_SECRET, valueFrom: HOST}
"#;
        // Set where the check runs, and still invisible to the filter.
        let report = check(&find_plugin_configs(yaml).unwrap()[0], &host_env());
        let errors = report.result.unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].field, "token_endpoint");
        assert!(
            errors[0]
                .problem
                .contains("(the VM does not declare AZURE_OPENID_CONFIG_TOKEN_ENDPOINT: add it to"),
            "{}",
            errors[0].problem
        );
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.starts_with("the loader fails open")),
            "{:?}",
            report.warnings
        );
    }

    #[test]
    fn kubernetes_documents_without_a_plugin_configuration_yield_nothing() {
        let yaml = "apiVersion: v1\nkind: Service\nmetadata: {name: x}\n---\n";
        assert!(find_plugin_configs(yaml).unwrap().is_empty());
    }
}
