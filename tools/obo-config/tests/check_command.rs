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
        "envoy-tenant.yaml",
        "docker-compose-envoy.yaml",
        "istio/envoyfilter.yaml",
        "istio/wasmplugin.yaml",
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
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("envoy.yaml");
    std::fs::write(
        &file,
        r#"
static_resources:
  listeners:
  - filter_chains:
    - filters:
      - typed_config:
          route_config:
            virtual_hosts:
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
                route: {cluster: other, internal_redirect_policy: {}}
          http_filters:
          - typed_config:
              config:
                vm_config:
                  environment_variables:
                    host_env_keys: [AZURE_APP_CLIENT_ID, AZURE_APP_CLIENT_SECRET, AZURE_OPENID_CONFIG_TOKEN_ENDPOINT]
                configuration:
                  value: '{"token_cluster": "entra_id", "targets": [{"host": "api.example.com", "cluster": "api", "scope": "api://a/.default"}]}'
"#,
    )
    .unwrap();
    let out = obo_config(&["check", "--assume-env", file.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
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
fn a_file_without_a_plugin_configuration_fails() {
    let file = envoy_dir().join("istio/serviceentry.yaml");
    let out = obo_config(&["check", "--assume-env", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("no entra-obo-filter plugin configuration"));
}

#[test]
fn a_wrong_command_line_exits_2_with_usage() {
    let out = obo_config(&["chek"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage"));
}
