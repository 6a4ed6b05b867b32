//! `obo-config check` as a platform team runs it in CI: on the shipped examples and on a broken
//! configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn obo_config(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_obo-config"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn envoy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../envoy")
}

/// Every YAML file under `envoy/` that holds a plugin configuration.
fn shipped_files_with_config() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![envoy_dir()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                let text = std::fs::read_to_string(&path).unwrap();
                if !obo_config::find_plugin_configs(&text).unwrap().is_empty() {
                    files.push(path);
                }
            }
        }
    }
    files.sort();
    files
}

#[test]
fn every_shipped_example_passes_the_check() {
    let files = shipped_files_with_config();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.strip_prefix(envoy_dir()).unwrap().display().to_string())
        .collect();
    for expected in [
        "envoy.yaml",
        "envoy-native.yaml",
        "envoy-agent.yaml",
        "envoy-tenant.yaml",
        "docker-compose-envoy.yaml",
        "envoy-workload-identity.yaml",
        "envoy-workload-identity-file-server.yaml",
        "istio/envoyfilter.yaml",
        "istio/wasmplugin.yaml",
        "istio/trafficextension.yaml",
        "istio/workload-identity-wasmplugin.yaml",
        "gateway/envoyextensionpolicy.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} has no plugin configuration; found {names:?}"
        );
    }
    for file in &files {
        let out = obo_config(&["check", "--assume-env", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}:\n{}",
            file.display(),
            stdout(&out)
        );
        assert!(stdout(&out).contains(": ok: "), "{}", stdout(&out));
        assert!(!stdout(&out).contains("warning"), "{}", stdout(&out));
        // Nothing of the employee's goes where no target names.
        assert!(
            !stdout(&out).contains("unmatched: passthrough"),
            "{}",
            stdout(&out)
        );
    }
}

#[test]
fn a_targets_route_that_follows_redirects_or_mirrors_is_warned_about() {
    let virtual_hosts = r#"
            - name: api
              domains: ["api.example.com"]
              routes:
              - match: {prefix: /}
                route:
                  cluster: api
                  internal_redirect_policy: {}
                  request_mirror_policies: [{cluster: shadow}]
            - name: rest
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: other, internal_redirect_policy: {}}"#;
    let plugin = r#"{"token_cluster": "entra_id", "targets": [{"host": "api.example.com", "cluster": "api", "scope": "api://a/.default"}]}"#;
    let clusters = "[{name: api}, {name: other}, {name: shadow}, {name: entra_id}]";
    let (code, text) = check_text(
        "envoy.yaml",
        &bootstrap_with_routes(plugin, clusters, virtual_hosts),
    );
    assert_eq!(code, Some(0), "{text}");
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(
        warnings[0].contains("virtual_hosts[0].routes[0] (targets[0]): internal_redirect_policy")
    );
    assert!(
        warnings[1].contains("virtual_hosts[0].routes[0] (targets[0]): request_mirror_policies")
    );
}

#[test]
fn a_broken_configuration_prints_each_problem_with_its_field_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.json");
    std::fs::write(
        &file,
        r#"{"token_cluster": "entra_id", "token_timeout_ms": 0,
            "targets": [{"host": "a.*.example", "scope": "api://a/.default"},
                        {"host": "b.example", "scope": ""}]}"#,
    )
    .unwrap();
    let out = obo_config(&["check", "--assume-env", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    for field in ["token_timeout_ms", "targets[0].host", "targets[1].scope"] {
        assert!(
            text.lines().any(|l| l.contains(&format!(": {field}: "))),
            "no line for {field}:\n{text}"
        );
    }
}

#[test]
fn without_secrets_the_check_names_the_missing_variable() {
    let file = envoy_dir().join("istio/envoyfilter.yaml");
    let out = obo_config(&["check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("AZURE_APP_CLIENT_SECRET"),
        "{}",
        stdout(&out)
    );
    let out = obo_config(&[
        "check",
        "--env",
        "AZURE_APP_CLIENT_ID=id",
        "--env",
        "AZURE_APP_CLIENT_SECRET=s",
        "--env",
        "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT=https://login.example/t/oauth2/v2.0/token",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stdout(&out));
}

#[test]
fn manifests_without_a_plugin_configuration_are_skipped_but_none_at_all_fails() {
    let istio = envoy_dir().join("istio");
    let mut manifests: Vec<String> = std::fs::read_dir(&istio)
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    manifests.sort();
    let mut args = vec!["check", "--assume-env"];
    args.extend(manifests.iter().map(String::as_str));
    let out = obo_config(&args);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("serviceentry.yaml: no entra-obo-filter plugin configuration (skipped)"),
        "{text}"
    );
    let file = istio.join("serviceentry.yaml");
    let out = obo_config(&["check", "--assume-env", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("no entra-obo-filter plugin configuration"));
}

/// An Envoy bootstrap with the filter (its VM takes the AZURE_* variables from the host), the
/// given plugin configuration and these clusters, and one route to `api`.
fn bootstrap(plugin: &str, clusters: &str) -> String {
    let all_to_api = r#"
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: api}}]}"#;
    bootstrap_with_routes(plugin, clusters, all_to_api)
}

/// The same with these virtual hosts (YAML list items, indented for `virtual_hosts:`).
fn bootstrap_with_routes(plugin: &str, clusters: &str, virtual_hosts: &str) -> String {
    format!(
        r#"
static_resources:
  clusters: {clusters}
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:{virtual_hosts}
          http_filters:
          - typed_config:
              config:
                vm_config:
                  environment_variables:
                    host_env_keys: [AZURE_APP_CLIENT_ID, AZURE_APP_CLIENT_SECRET, AZURE_OPENID_CONFIG_TOKEN_ENDPOINT]
                configuration:
                  value: '{plugin}'
"#
    )
}

fn check_text(name: &str, text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join(name);
    std::fs::write(&file, text).unwrap();
    let out = obo_config(&["check", "--assume-env", file.to_str().unwrap()]);
    (out.status.code(), stdout(&out))
}

#[test]
fn a_token_cluster_the_envoy_configuration_lacks_is_a_problem() {
    let plugin = r#"{"token_cluster": "entra", "targets": [{"cluster": "orders", "scope": "api://a/.default"}]}"#;
    let (code, text) = check_text(
        "envoy.yaml",
        &bootstrap(plugin, "[{name: api}, {name: entra_id}]"),
    );
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            ": token_cluster: names no cluster of this Envoy configuration (it has api, entra_id)"
        ),
        "{text}"
    );
    assert!(
        text.contains(": targets[0].cluster: matches no cluster"),
        "{text}"
    );
    let plugin = r#"{"token_cluster": "entra_id", "targets": [{"cluster": "api", "scope": "api://a/.default"}]}"#;
    let (code, text) = check_text(
        "envoy.yaml",
        &bootstrap(plugin, "[{name: api}, {name: entra_id}]"),
    );
    assert_eq!(code, Some(0), "{text}");
}

#[test]
fn a_credential_written_into_the_configuration_is_warned_about() {
    let plugin = r#"{"token_cluster": "entra_id", "client_secret": "s3cr3t", "targets": [{"host": "a.example", "scope": "api://a/.default"}]}"#;
    let (code, text) = check_text("plugin.json", plugin);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(": warning: client_secret: written into the configuration"),
        "{text}"
    );
    assert!(
        !text.contains("s3cr3t"),
        "the warning must not quote the secret: {text}"
    );
    let plugin = r#"{"token_cluster": "entra_id", "client_secret": "${AZURE_APP_CLIENT_SECRET}", "targets": [{"host": "a.example", "scope": "api://a/.default"}]}"#;
    let (_, text) = check_text("plugin.json", plugin);
    assert!(!text.contains("warning"), "{text}");
}

#[test]
fn check_help_prints_the_usage() {
    let out = obo_config(&["check", "--help"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("usage: obo-config check"));
}

#[test]
fn a_wrong_command_line_exits_2_with_usage() {
    let out = obo_config(&["chek"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}

/// An Envoy bootstrap whose filter fetches its client assertion: the VM declares these host
/// variables, and the listeners (YAML list items, indented for `listeners:`) follow the egress one.
fn bootstrap_with_source(
    plugin: &str,
    env_keys: &str,
    clusters: &str,
    more_listeners: &str,
) -> String {
    format!(
        r#"
static_resources:
  clusters: {clusters}
  listeners:
  - name: egress
    address: {{socket_address: {{address: 127.0.0.1, port_value: 10000}}}}
    filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:
            - {{name: all, domains: ["*"], routes: [{{match: {{prefix: /}}, route: {{cluster: api}}}}]}}
          http_filters:
          - typed_config:
              config:
                vm_config:
                  environment_variables:
                    host_env_keys: {env_keys}
                configuration:
                  value: '{plugin}'{more_listeners}
"#
    )
}

const SOURCE_PLUGIN: &str = r#"{"token_cluster": "entra_id", "client_id": "id", "token_endpoint": "https://login.example/t/oauth2/v2.0/token", "client_assertion_source": {"cluster": "federated_token"}, "targets": [{"host": "a.example", "scope": "api://a/.default"}]}"#;

/// The token file's listener: internal (no address), as it must be.
const INTERNAL_SOURCE: &str = r#"
  - name: federated_token
    internal_listener: {}
    filter_chains: []"#;

fn internal_source_cluster(name: &str) -> String {
    format!(
        "[{{name: api}}, {{name: entra_id}}, {{name: {name}, load_assignment: {{endpoints: \
         [{{lb_endpoints: [{{endpoint: {{address: {{envoy_internal_address: \
         {{server_listener_name: federated_token}}}}}}}}]}}]}}}}]"
    )
}

#[test]
fn an_assertion_source_cluster_the_envoy_configuration_lacks_is_a_problem() {
    let text = bootstrap_with_source(SOURCE_PLUGIN, "[]", "[{name: api}, {name: entra_id}]", "");
    let (code, out) = check_text("envoy.yaml", &text);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(": client_assertion_source.cluster: federated_token is not a cluster of this Envoy configuration (it has api, entra_id)"),
        "{out}"
    );
    let text = bootstrap_with_source(
        SOURCE_PLUGIN,
        "[]",
        &internal_source_cluster("federated_token"),
        INTERNAL_SOURCE,
    );
    let (code, out) = check_text("envoy.yaml", &text);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("warning"), "{out}");
}

#[test]
fn workload_identity_needs_the_azure_federated_token_cluster() {
    let plugin = r#"{"token_cluster": "entra_id", "targets": [{"host": "a.example", "scope": "api://a/.default"}]}"#;
    let env_keys = "[AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE]";
    let text = bootstrap_with_source(plugin, env_keys, "[{name: api}, {name: entra_id}]", "");
    let (code, out) = check_text("envoy.yaml", &text);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(": client_assertion_source.cluster: azure_federated_token is not a cluster"),
        "{out}"
    );
    let clusters = internal_source_cluster("azure_federated_token");
    let (code, out) = check_text(
        "envoy.yaml",
        &bootstrap_with_source(plugin, env_keys, &clusters, INTERNAL_SOURCE),
    );
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("assertion fetched from cluster azure_federated_token"),
        "{out}"
    );
}

#[test]
fn an_assertion_file_a_listener_with_an_address_reaches_is_warned_about() {
    // Served by a listener on a port of its own: the cluster's endpoint is that port.
    let on_a_port = r#"
  - name: token_file
    address: {socket_address: {address: 127.0.0.1, port_value: 15999}}
    filter_chains: []"#;
    let clusters = "[{name: api}, {name: entra_id}, {name: federated_token, load_assignment: \
                    {endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: \
                    {address: 127.0.0.1, port_value: 15999}}}}]}]}}]";
    let (code, out) = check_text(
        "envoy.yaml",
        &bootstrap_with_source(SOURCE_PLUGIN, "[]", clusters, on_a_port),
    );
    assert_eq!(code, Some(0), "{out}");
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains(
            "client_assertion_source.cluster: federated_token is reachable from \
             static_resources.listeners[1] (token_file, port 15999)"
        ),
        "{out}"
    );
    // An internal listener, but a route of a listener with an address leads to it.
    let routed = r#"
  - name: federated_token
    internal_listener: {}
    filter_chains: []
  - name: leak
    address: {socket_address: {address: 0.0.0.0, port_value: 8080}}
    filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: federated_token}}]}"#;
    let (_, out) = check_text(
        "envoy.yaml",
        &bootstrap_with_source(
            SOURCE_PLUGIN,
            "[]",
            &internal_source_cluster("federated_token"),
            routed,
        ),
    );
    let warnings: Vec<&str> = out.lines().filter(|l| l.contains(": warning: ")).collect();
    assert_eq!(warnings.len(), 1, "{out}");
    assert!(
        warnings[0].contains("static_resources.listeners[2] (leak, port 8080)"),
        "{out}"
    );
}
