//! Configuration end to end: Envoy refuses a filter whose configuration is wrong, with a log
//! line that names the field; and Envoy accepts every shipped example (`obo-config`'s tests check their plugin
//! configurations).

use obo_e2e::envoy::{is_native_filter_line, Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{MockIdp, CLIENT_SECRET};
use obo_e2e::stack::plugin_config;
use serde_json::{json, Value};

/// Starts Envoy with `config` (raw plugin configuration text) and returns its log; panics if
/// Envoy accepted the configuration.
fn refused_log(config: String) -> String {
    let idp = MockIdp::start();
    let mut opts = EnvoyOptions::new(&Value::Null, idp.port, idp.port);
    opts.plugin_config = config;
    opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
    match Envoy::try_start(opts) {
        Ok(envoy) => panic!("envoy accepted the configuration:\n{}", envoy.log()),
        Err(log) => log,
    }
}

fn with(idp: &MockIdp, change: impl FnOnce(&mut Value)) -> String {
    let mut cfg = plugin_config(idp, &json!({}));
    change(&mut cfg);
    cfg.to_string()
}

fn assert_names(log: &str, field: &str) {
    let line = log
        .lines()
        .find(|l| {
            (l.contains("wasm log") || is_native_filter_line(l))
                && l.contains("invalid configuration")
        })
        .unwrap_or_else(|| panic!("no configuration error logged:\n{log}"));
    assert!(
        line.contains(field),
        "the error does not name {field}: {line}"
    );
}

#[test]
fn bad_json_is_refused() {
    assert_names(
        &refused_log("{\"token_cluster\": \"entra_id\",".into()),
        "not valid JSON",
    );
}

#[test]
fn unknown_field_is_refused_by_name() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| c["token_clustr"] = json!("entra_id"));
    assert_names(&refused_log(cfg), "token_clustr");
}

#[test]
fn missing_token_cluster_is_refused_by_name() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| {
        c.as_object_mut().unwrap().remove("token_cluster");
    });
    assert_names(&refused_log(cfg), "token_cluster");
}

#[test]
fn unset_environment_reference_is_refused_by_name() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| c["client_id"] = json!("${NO_SUCH_VARIABLE}"));
    let log = refused_log(cfg);
    assert_names(&log, "client_id");
    assert_names(&log, "NO_SUCH_VARIABLE");
}

#[test]
fn malformed_endpoint_is_refused_by_name() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| {
        c["token_endpoint"] = json!("login.microsoftonline.com/tenant")
    });
    assert_names(&refused_log(cfg), "token_endpoint");
}

#[test]
fn target_without_scope_is_refused_by_its_index() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| c["targets"][1] = json!({"host": "b.example.com"}));
    assert_names(&refused_log(cfg), "targets[1]");
}

#[test]
fn a_wildcard_over_a_whole_top_level_domain_is_refused() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| c["targets"][0]["host"] = json!("*.com"));
    let log = refused_log(cfg);
    assert_names(&log, "targets[0].host");
    assert!(log.contains("two labels"), "{log}");
}

#[test]
fn a_target_with_neither_host_nor_cluster_is_refused() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| {
        c["targets"][0] = json!({"scope": "api://a/.default"})
    });
    assert_names(&refused_log(cfg), "targets[0]: needs host or cluster");
}

#[test]
fn configuration_errors_never_echo_the_secret() {
    let idp = MockIdp::start();
    let cfg = with(&idp, |c| {
        c["client_secret"] = json!(CLIENT_SECRET);
        c["targets"] = json!("not a list");
    });
    let log = refused_log(cfg);
    assert!(
        !log.contains(CLIENT_SECRET),
        "the secret reached Envoy's log"
    );
}

/// `envoy --mode validate` on a shipped configuration, with the filter's environment set.
fn envoy_validates(file: &str, rewrite: impl Fn(String) -> String) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let text = rewrite(std::fs::read_to_string(root.join("envoy").join(file)).unwrap());
    let path = dir.path().join(file.replace('/', "_"));
    std::fs::write(&path, text).unwrap();
    let out = std::process::Command::new(obo_e2e::envoy::envoy_bin())
        .current_dir(root)
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .env("AZURE_APP_CLIENT_ID", "client")
        .env("AZURE_APP_CLIENT_SECRET", "secret")
        .env(
            "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT",
            "https://login.microsoftonline.com/t/oauth2/v2.0/token",
        )
        .env("OBO_DEMO_SCOPE", "https://graph.microsoft.com/.default")
        .env("TOOLS_STS_SECRET", "tools-secret")
        // Workload identity's, as AKS sets them in the pod.
        .env("AZURE_CLIENT_ID", "client")
        .env("AZURE_TENANT_ID", "tenant")
        .env("AZURE_FEDERATED_TOKEN_FILE", "azure-identity-token")
        .env("AZURE_APP_JWK", &obo_e2e::client_key::client_key().jwk)
        .env("TOKEN_X_CLIENT_ID", "local:demo:caller")
        .env(
            "TOKEN_X_PRIVATE_JWK",
            &obo_e2e::client_key::client_key().jwk,
        )
        .env(
            "TOKEN_X_TOKEN_ENDPOINT",
            "http://mock-oauth2-server:8080/tokenx/token",
        )
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && log.contains("OK"),
        "envoy refused envoy/{file}:\n{log}"
    );
}

#[test]
fn shipped_envoy_configurations_are_accepted_by_envoy() {
    envoy_validates("envoy.yaml", |t| t);
    envoy_validates("envoy-tenant.yaml", |t| t);
    envoy_validates("envoy-agent.yaml", |t| t);
    envoy_validates("envoy-onprem-proxy.yaml", |t| {
        t.replace("${OBO_WEB_PROXY_HOST}", "proxy.example.internal")
            .replace("${OBO_WEB_PROXY_PORT}", "3128")
    });
    let wasm = obo_e2e::envoy::wasm_path().display().to_string();
    envoy_validates("docker-compose-envoy.yaml", |t| {
        t.replace("/etc/envoy/entra_obo_filter.wasm", &wasm)
    });
    envoy_validates(obo_e2e::workload_identity::LUA_RECIPE, |t| t);
}

#[test]
fn the_file_server_recipe_is_accepted_by_envoy_1_38_2_and_later() {
    let version = obo_e2e::workload_identity::envoy_version();
    if version < (1, 38, 2) {
        eprintln!(
            "skipped: Envoy {}.{}.{} has no file_server filter (1.38.2 and later have it)",
            version.0, version.1, version.2
        );
        return;
    }
    envoy_validates(obo_e2e::workload_identity::FILE_SERVER_RECIPE, |t| t);
}
