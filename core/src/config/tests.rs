//! What the configuration accepts, with which defaults, and how each refusal names its field.

use std::time::Duration;

use serde_json::{json, Value};

use super::*;
use crate::client_assertion::{AssertionSettings, SigningAlg};

fn env_with(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
    move |name| {
        vars.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
    }
}

const ENV: &[(&str, &str)] = &[
    (
        ENV_TOKEN_ENDPOINT,
        "https://login.example/tenant/oauth2/v2.0/token",
    ),
    (ENV_CLIENT_ID, "client-from-env"),
    (ENV_CLIENT_SECRET, "secret-from-env"),
    ("OTHER_SECRET", "other-secret"),
];

fn minimal() -> Value {
    json!({
        "token_cluster": "entra_id",
        "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]
    })
}

fn parse_value(v: &Value, env: &[(&'static str, &'static str)]) -> Result<Config, ConfigError> {
    let vars: &'static [(&'static str, &'static str)] = Box::leak(env.to_vec().into_boxed_slice());
    parse(v.to_string().as_bytes(), &env_with(vars)).map_err(|e| e.first().clone())
}

fn secret_of(cfg: &Config) -> &str {
    match &cfg.providers[0].client_auth {
        ClientAuth::Secret(secret) => secret.expose(),
        other => panic!("{other:?} where a secret was expected"),
    }
}

fn error_of(v: Value) -> ConfigError {
    parse_value(&v, ENV).expect_err("configuration should be refused")
}

#[test]
fn issue_example_parses_with_every_value() {
    let cfg = parse_value(
        &json!({
          "token_cluster": "entra_id",
          "token_endpoint": "https://login.microsoftonline.com/tenant/oauth2/v2.0/token",
          "client_id": "${AZURE_APP_CLIENT_ID}",
          "client_secret": "${AZURE_APP_CLIENT_SECRET}",
          "token_timeout_ms": 2500,
          "targets": [
            {"host": "api.example.com", "scope": "api://prod.team.api/.default"},
            {"host": "*.team.svc.cluster.local", "path_prefix": "/v2/", "scope": "api://prod.team.other/.default"}
          ],
          "unmatched": "deny",
          "cache": {"max_entries": 500, "expiry_skew_s": 30}
        }),
        ENV,
    )
    .unwrap();
    assert_eq!(cfg.providers[0].token_cluster, "entra_id");
    assert_eq!(
        cfg.providers[0].token_endpoint.authority,
        "login.microsoftonline.com"
    );
    assert_eq!(
        cfg.providers[0].token_endpoint.path,
        "/tenant/oauth2/v2.0/token"
    );
    assert_eq!(cfg.providers[0].client_id, "client-from-env");
    assert_eq!(secret_of(&cfg), "secret-from-env");
    assert_eq!(cfg.token_timeout, Duration::from_millis(2500));
    assert_eq!(cfg.targets.len(), 2);
    assert_eq!(cfg.targets[1].path_prefix.as_deref(), Some("/v2/"));
    assert_eq!(cfg.unmatched, Unmatched::Deny);
    assert_eq!(cfg.cache.max_entries, 500);
    assert_eq!(cfg.cache.expiry_skew_s, 30);
}

#[test]
fn absent_fields_take_documented_defaults_and_environment() {
    let cfg = parse_value(&minimal(), ENV).unwrap();
    assert_eq!(
        cfg.providers[0].token_endpoint.url,
        "https://login.example/tenant/oauth2/v2.0/token"
    );
    assert_eq!(cfg.providers[0].client_id, "client-from-env");
    assert_eq!(secret_of(&cfg), "secret-from-env");
    assert_eq!(cfg.token_timeout, Duration::from_millis(5000));
    assert_eq!(cfg.unmatched, Unmatched::Strip);
    assert!(!cfg.envoy_normalizes_paths);
    assert!(!cfg.reads_route_cluster);
    assert_eq!(cfg.max_exchanges_in_flight_per_worker, 100);
    assert_eq!(cfg.providers[0].allowed_issuers, None);
    assert_eq!(cfg.providers[0].allowed_tenants, None);
    assert_eq!(cfg.cache.max_entries, 10_000);
    assert_eq!(cfg.cache.expiry_skew_s, 60);
    assert_eq!(cfg.cache.worker_entries, 1_024);
    assert_eq!(
        (cfg.cache.refresh_ahead_s, cfg.cache.refresh_ahead_percent),
        (300, 10)
    );
    assert_eq!(cfg.cache.claims_challenge_holdoff_s, 60);
    assert_eq!(cfg.subject_token.leeway_s, 60);
    assert_eq!(cfg.providers[0].audiences, None);
    assert_eq!(cfg.negative_cache_s, 5);
    assert_eq!(
        cfg.backoff,
        BackoffSettings {
            default_s: 5,
            max_s: 60
        }
    );
}

#[test]
fn require_audience_accepts_the_client_id_and_its_app_id_uri() {
    let mut v = minimal();
    v["require_audience"] = json!(true);
    let cfg = parse_value(&v, ENV).unwrap();
    assert_eq!(
        cfg.providers[0].audiences,
        Some(vec![
            "client-from-env".to_string(),
            "api://client-from-env".to_string()
        ])
    );
}

#[test]
fn reliability_settings_are_range_checked() {
    for (field, value) in [
        ("subject_token_leeway_s", json!(99_999)),
        ("negative_cache_s", json!(301)),
    ] {
        let mut v = minimal();
        v[field] = value;
        assert_eq!(error_of(v).field, field);
    }
    let mut v = minimal();
    v["backoff"] = json!({"max_s": 99_999});
    assert_eq!(error_of(v).field, "backoff.max_s");
    let mut v = minimal();
    v["backoff"] = json!({"defualt_s": 1});
    assert!(error_of(v).to_string().contains("defualt_s"));
}

#[test]
fn explicit_values_win_over_environment() {
    let mut v = minimal();
    v["client_id"] = json!("explicit-client");
    v["client_secret"] = json!("${OTHER_SECRET}");
    let cfg = parse_value(&v, ENV).unwrap();
    assert_eq!(cfg.providers[0].client_id, "explicit-client");
    assert_eq!(secret_of(&cfg), "other-secret");
}

#[test]
fn endpoint_with_port_and_query_keeps_both() {
    let mut v = minimal();
    v["token_endpoint"] = json!("http://127.0.0.1:8080/t/oauth2/v2.0/token?x=1");
    let cfg = parse_value(&v, ENV).unwrap();
    assert_eq!(cfg.providers[0].token_endpoint.authority, "127.0.0.1:8080");
    assert_eq!(
        cfg.providers[0].token_endpoint.path,
        "/t/oauth2/v2.0/token?x=1"
    );
}

#[test]
fn bad_json_is_refused() {
    let e = parse(b"{\"token_cluster\": ", &env_with(ENV_STATIC))
        .unwrap_err()
        .first()
        .clone();
    assert_eq!(e.field, "configuration");
    assert!(e.problem.contains("not valid JSON"), "{e}");
}

const ENV_STATIC: &[(&str, &str)] = ENV;

#[test]
fn empty_configuration_is_refused() {
    let e = parse(b"  ", &env_with(ENV_STATIC))
        .unwrap_err()
        .first()
        .clone();
    assert_eq!(e.field, "configuration");
}

#[test]
fn unknown_top_level_field_is_named() {
    let mut v = minimal();
    v["token_clustr"] = json!("typo");
    let e = error_of(v);
    assert!(e.to_string().contains("token_clustr"), "{e}");
}

#[test]
fn unknown_target_field_is_named_with_its_index() {
    let mut v = minimal();
    v["targets"][0]["path_prefx"] = json!("/v1");
    let e = error_of(v);
    assert_eq!(e.field, "targets[0].path_prefx");
}

#[test]
fn missing_token_cluster_is_named() {
    let mut v = minimal();
    v.as_object_mut().unwrap().remove("token_cluster");
    assert!(error_of(v).to_string().contains("token_cluster"));
}

#[test]
fn missing_targets_and_empty_targets_are_refused() {
    let mut v = minimal();
    v.as_object_mut().unwrap().remove("targets");
    assert!(error_of(v).to_string().contains("targets"));
    let mut v = minimal();
    v["targets"] = json!([]);
    assert_eq!(error_of(v).field, "targets");
}

#[test]
fn missing_scope_is_named_with_its_target() {
    let mut v = minimal();
    v["targets"] = json!([{"host": "a.example"}, {"host": "b.example"}]);
    let e = error_of(v);
    assert_eq!(e.field, "targets[0].scope");
    assert!(e.problem.contains("required"), "{e}");
}

#[test]
fn unset_environment_reference_names_field_and_variable() {
    let mut v = minimal();
    v["client_secret"] = json!("${NOT_SET_ANYWHERE}");
    let e = error_of(v);
    assert_eq!(e.field, "client_secret");
    assert!(e.problem.contains("NOT_SET_ANYWHERE"), "{e}");
}

#[test]
fn environment_reference_works_inside_targets() {
    let mut v = minimal();
    v["targets"][0]["scope"] = json!("${AZURE_APP_CLIENT_ID}");
    let cfg = parse_value(&v, ENV).unwrap();
    assert_eq!(cfg.targets[0].resource, "client-from-env");
    v["targets"][0]["scope"] = json!("${MISSING_SCOPE}");
    assert_eq!(error_of(v).field, "targets[0].scope");
}

#[test]
fn missing_defaults_name_field_and_variable() {
    let e = parse_value(&minimal(), &[]).unwrap_err();
    assert_eq!(e.field, "token_endpoint");
    assert!(e.problem.contains(ENV_TOKEN_ENDPOINT), "{e}");
    let e = parse_value(&minimal(), &ENV[..1]).unwrap_err();
    assert_eq!(e.field, "client_id");
    let e = parse_value(&minimal(), &ENV[..2]).unwrap_err();
    assert_eq!(e.field, "client_secret");
    assert!(e.problem.contains(ENV_CLIENT_SECRET), "{e}");
}

#[test]
fn endpoint_host_is_lowercased_and_a_default_port_dropped() {
    for (raw, authority, url) in [
        (
            "https://LOGIN.example:443",
            "login.example",
            "https://login.example/",
        ),
        (
            "http://idp.local:80/t?a=b",
            "idp.local",
            "http://idp.local/t?a=b",
        ),
        ("https://[::1]:8443/t", "[::1]:8443", "https://[::1]:8443/t"),
        (
            "https://login.example?x=1",
            "login.example",
            "https://login.example/?x=1",
        ),
    ] {
        let mut v = minimal();
        v["token_endpoint"] = json!(raw);
        let endpoint = parse_value(&v, ENV).unwrap().providers[0]
            .token_endpoint
            .clone();
        assert_eq!(
            (endpoint.authority.as_str(), endpoint.url.as_str()),
            (authority, url)
        );
    }
}

#[test]
fn malformed_endpoints_are_refused() {
    for bad in [
        "not a url",
        "ftp://login.example/token",
        "https://user:pw@login.example/token",
        "https://login.example/token#frag",
        "login.example/token",
        "https:///token",
        "https://login.example/to ken",
    ] {
        let mut v = minimal();
        v["token_endpoint"] = json!(bad);
        assert_eq!(error_of(v).field, "token_endpoint", "{bad}");
    }
}

#[test]
fn bad_hosts_are_refused() {
    for bad in [
        "",
        "api.example.com.",
        "api.example.com:",
        "api.example.com:0",
        "api.example.com:65536",
        "https://api.example.com",
        "a.*.example",
        "*",
        "*.",
        "*.com",
        "api/x",
        "a b",
    ] {
        let mut v = minimal();
        v["targets"][0]["host"] = json!(bad);
        assert_eq!(error_of(v).field, "targets[0].host", "{bad}");
    }
}

#[test]
fn a_target_names_a_host_or_a_cluster_or_both() {
    let mut v = minimal();
    v["targets"] = json!([
        {"cluster": "outbound|80||orders.shop.svc.cluster.local", "scope": "s1"},
        {"host": "api.example.com:8080", "cluster": "api", "scope": "s2"}
    ]);
    let cfg = parse_value(&v, ENV).unwrap();
    assert!(cfg.reads_route_cluster);
    assert!(cfg.targets[0].host.is_none() && cfg.targets[0].cluster.is_some());
    assert!(cfg.targets[1].host.is_some() && cfg.targets[1].cluster.is_some());
    let mut v = minimal();
    v["targets"] = json!([{"scope": "s", "path_prefix": "/v2/"}]);
    let e = error_of(v);
    assert_eq!(e.field, "targets[0]");
    assert!(e.problem.contains("host or cluster"), "{e}");
    for bad in ["", "a b", "*|*|*|*|*"] {
        let mut v = minimal();
        v["targets"][0]["cluster"] = json!(bad);
        assert_eq!(error_of(v).field, "targets[0].cluster", "{bad:?}");
    }
}

#[test]
fn unmatched_paths_and_exchange_limit_are_read_and_checked() {
    let mut v = minimal();
    v["unmatched"] = json!("passthrough");
    v["envoy_normalizes_paths"] = json!(true);
    v["max_exchanges_in_flight_per_worker"] = json!(7);
    let cfg = parse_value(&v, ENV).unwrap();
    assert_eq!(cfg.unmatched, Unmatched::Passthrough);
    assert!(cfg.envoy_normalizes_paths);
    assert_eq!(cfg.max_exchanges_in_flight_per_worker, 7);
    for bad in [0, 10_001] {
        let mut v = minimal();
        v["max_exchanges_in_flight_per_worker"] = json!(bad);
        assert_eq!(error_of(v).field, "max_exchanges_in_flight_per_worker");
    }
}

#[test]
fn allowed_issuers_and_tenants_are_checked_when_loaded() {
    let mut v = minimal();
    v["allowed_issuers"] = json!(["https://login.microsoftonline.com/t/v2.0"]);
    v["allowed_tenants"] = json!(["72F988BF-86F1-41AF-91AB-2D7CD011DB47"]);
    let cfg = parse_value(&v, ENV).unwrap();
    assert_eq!(
        cfg.providers[0].allowed_tenants.as_deref(),
        Some(&["72f988bf-86f1-41af-91ab-2d7cd011db47".to_string()][..])
    );
    for (field, value, wrong) in [
        (
            "allowed_tenants",
            json!(["not-a-guid"]),
            "allowed_tenants[0]",
        ),
        ("allowed_tenants", json!([]), "allowed_tenants"),
        (
            "allowed_tenants",
            json!("72f988bf-86f1-41af-91ab-2d7cd011db47"),
            "allowed_tenants",
        ),
        (
            "allowed_issuers",
            json!(["login.microsoftonline.com"]),
            "allowed_issuers[0]",
        ),
        ("allowed_issuers", json!([5]), "allowed_issuers[0]"),
    ] {
        let mut v = minimal();
        v[field] = value;
        assert_eq!(error_of(v).field, wrong, "{field}");
    }
    let mut v = minimal();
    v["grant"] = json!("client_credentials");
    v["allowed_tenants"] = json!(["72f988bf-86f1-41af-91ab-2d7cd011db47"]);
    let e = error_of(v);
    assert_eq!(e.field, "allowed_tenants");
    assert!(e.problem.contains("client_credentials"), "{e}");
}

#[test]
fn bad_path_prefix_and_scope_are_refused() {
    let mut v = minimal();
    v["targets"][0]["path_prefix"] = json!("v2/");
    assert_eq!(error_of(v).field, "targets[0].path_prefix");
    let mut v = minimal();
    v["targets"][0]["scope"] = json!(" ");
    assert_eq!(error_of(v).field, "targets[0].scope");
}

#[test]
fn out_of_range_numbers_are_refused() {
    let mut v = minimal();
    v["token_timeout_ms"] = json!(0);
    assert_eq!(error_of(v).field, "token_timeout_ms");
    let mut v = minimal();
    v["token_timeout_ms"] = json!(-5);
    assert_eq!(error_of(v).field, "token_timeout_ms");
    let mut v = minimal();
    v["cache"] = json!({"max_entries": 0});
    assert_eq!(error_of(v).field, "cache.max_entries");
    let mut v = minimal();
    v["cache"] = json!({"worker_entries": 100_001});
    assert_eq!(error_of(v).field, "cache.worker_entries");
    let mut v = minimal();
    v["cache"] = json!({"claims_challenge_holdoff_s": 3_601});
    assert_eq!(error_of(v).field, "cache.claims_challenge_holdoff_s");
    let mut v = minimal();
    v["cache"] = json!({"expiry_skew_s": 100000});
    assert_eq!(error_of(v).field, "cache.expiry_skew_s");
    let mut v = minimal();
    v["cache"] = json!({"max_entrys": 5});
    assert!(error_of(v).to_string().contains("max_entrys"));
}

#[test]
fn unmatched_accepts_only_documented_values() {
    let mut v = minimal();
    v["unmatched"] = json!("allow");
    let e = error_of(v);
    assert_eq!(e.field, "unmatched");
}

#[test]
fn every_problem_is_reported_not_only_the_first() {
    let v = json!({
        "token_cluster": "",
        "token_endpoint": "ftp://login.example/token",
        "token_timeout_ms": 0,
        "targets": [
            {"host": "a.*.example", "scope": "api://x/.default"},
            {"host": "b.example", "path_prefix": "v2", "scope": " "}
        ],
        "cache": {"max_entries": 0},
        "backoff": {"max_s": 99999}
    });
    let vars: &'static [(&'static str, &'static str)] = &ENV[1..];
    let errors = parse(v.to_string().as_bytes(), &env_with(vars)).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "token_cluster",
            "token_endpoint",
            "token_timeout_ms",
            "cache.max_entries",
            "backoff.max_s",
            "targets[0].host",
            "targets[1].path_prefix",
            "targets[1].scope",
        ]
    );
    assert_eq!(errors.to_string().lines().count(), fields.len());
}

#[test]
fn a_typo_and_the_problems_behind_it_are_reported_together() {
    let mut v = minimal();
    v["targets"] = json!([{"host": "*", "scop": "api://x/.default"}]);
    let errors = parse(v.to_string().as_bytes(), &env_with(ENV)).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        ["targets[0].scop", "targets[0].host", "targets[0].scope"]
    );
}

#[test]
fn a_malformed_token_endpoint_says_what_form_is_wanted() {
    let mut v = minimal();
    v["token_endpoint"] = json!("login.microsoftonline.com/tenant token");
    let e = error_of(v);
    assert_eq!(e.field, "token_endpoint");
    assert!(
        e.problem
            .contains("https://login.microsoftonline.com/<tenant id>/oauth2/v2.0/token"),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported_in_one_pass_with_its_path() {
    let mut v = minimal();
    v["token_clustr"] = json!("typo");
    v["token_timeout_ms"] = json!(-5);
    v["unmatched"] = json!("allow");
    v["cache"] = json!({"max_entries": "many", "max_entrys": 5});
    v["providers"] = json!({"tokenx": {"grant": "magic", "client_jwk": {}}});
    v["targets"] =
        json!([{"host": "a.example", "path_prefx": "/v1"}, {"host": "b", "scope": 7}, 5]);
    let errors = parse(v.to_string().as_bytes(), &env_with(ENV)).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "providers.tokenx.grant",
            "targets[0].path_prefx",
            "targets[1].scope",
            "targets[2]",
            "token_timeout_ms",
            "unmatched",
            "cache.max_entries",
            "cache.max_entrys",
            "token_clustr",
            // Then what the values mean, in the same report.
            "providers.tokenx.token_cluster",
            "providers.tokenx.client_jwk",
            "targets[0].scope",
        ]
    );
    let text = errors.to_string();
    assert!(
        text.contains("cache.max_entrys: is not a known field"),
        "{text}"
    );
    // Each wrong value says what the field takes and what it got.
    for message in [
        "unmatched: must be `strip`, `deny` or `passthrough`, not the string \"allow\"",
        "token_timeout_ms: must be a whole number, 0 or more, not `-5`",
        "targets[1].scope: must be a string, not `7`",
    ] {
        assert!(text.contains(message), "{text}");
    }
}

#[test]
fn a_settings_object_of_the_wrong_type_is_named() {
    let mut v = minimal();
    v["backoff"] = json!(5);
    let e = error_of(v);
    assert_eq!(
        (e.field.as_str(), e.problem.as_str()),
        ("backoff", "must be a JSON object")
    );
}

#[test]
fn a_client_secret_of_the_wrong_type_is_refused_without_its_value() {
    let mut v = minimal();
    v["client_secret"] = json!(918273645);
    let e = error_of(v);
    assert_eq!(e.field, "client_secret");
    assert!(!e.to_string().contains("918273645"), "{e}");
}

#[test]
fn every_unset_environment_reference_is_reported() {
    let mut v = minimal();
    v["client_id"] = json!("${UNSET_ONE}");
    v["targets"][0]["scope"] = json!("${UNSET_TWO}");
    let errors = parse(v.to_string().as_bytes(), &env_with(ENV)).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["client_id", "targets[0].scope"]);
}

fn jwk_env(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let jwk: &'static str = Box::leak(crate::testing::test_key::jwk().into_boxed_str());
    let mut vars = vec![
        (
            ENV_TOKEN_ENDPOINT,
            "https://login.example/tenant/oauth2/v2.0/token",
        ),
        (ENV_CLIENT_ID, "client-from-env"),
        (ENV_CLIENT_JWK, jwk),
    ];
    vars.extend_from_slice(extra);
    vars
}

fn assertion_settings(cfg: &Config) -> &AssertionSettings {
    match &cfg.providers[0].client_auth {
        ClientAuth::PrivateKey(settings) => settings,
        other => panic!("{other:?} where a private key was expected"),
    }
}

#[test]
fn private_key_from_the_environment_is_preferred_over_the_secret() {
    let cfg = parse_value(&minimal(), &jwk_env(&[(ENV_CLIENT_SECRET, "s")])).unwrap();
    let settings = assertion_settings(&cfg);
    assert_eq!(settings.alg, SigningAlg::Rs256);
    assert_eq!(
        settings.audience,
        "https://login.example/tenant/oauth2/v2.0/token"
    );
    assert_eq!(settings.lifetime_s, 60);
}

#[test]
fn configured_credential_wins_over_the_environment() {
    let mut v = minimal();
    v["client_secret"] = json!("explicit");
    let cfg = parse_value(&v, &jwk_env(&[])).unwrap();
    assert_eq!(
        cfg.providers[0].client_auth,
        ClientAuth::Secret(Secret("explicit".into()))
    );
    let mut v = minimal();
    v["client_jwk"] = json!("${AZURE_APP_JWK}");
    v["client_assertion"] =
        json!({"alg": "PS256", "audience": "https://issuer.example/v2.0", "lifetime_s": 600});
    let cfg = parse_value(&v, &jwk_env(&[(ENV_CLIENT_SECRET, "s")])).unwrap();
    let settings = assertion_settings(&cfg);
    assert_eq!(settings.alg, SigningAlg::Ps256);
    assert_eq!(settings.audience, "https://issuer.example/v2.0");
    assert_eq!(settings.lifetime_s, 600);
}

#[test]
fn a_jwk_object_is_accepted_inline() {
    let mut v = minimal();
    v["client_jwk"] = crate::json::parse(crate::testing::test_key::jwk()).unwrap();
    assert!(matches!(
        parse_value(&v, ENV).unwrap().providers[0].client_auth,
        ClientAuth::PrivateKey(_)
    ));
}

#[test]
fn client_assertion_settings_with_a_secret_are_refused_by_name() {
    let mut v = minimal();
    v["client_secret"] = json!("s");
    v["client_assertion"] = json!({"reuse_s": 10});
    let e = parse_value(&v, &jwk_env(&[])).unwrap_err();
    assert_eq!(e.field, "client_assertion");
    assert!(e.problem.contains("configured with client_secret"), "{e}");
    // From the environment: the secret is used because the key variable is not set.
    let mut v = minimal();
    v["client_assertion"] = json!({"alg": "PS256"});
    let e = parse_value(&v, ENV).unwrap_err();
    assert_eq!(e.field, "client_assertion");
    assert!(
        e.problem.contains(ENV_CLIENT_SECRET) && e.problem.contains(ENV_CLIENT_JWK),
        "{e}"
    );
    assert!(!e.problem.contains("secret-from-env"), "{e}");
    // An empty object sets nothing, and the key variable set makes the settings apply.
    v["client_assertion"] = json!({});
    assert_eq!(secret_of(&parse_value(&v, ENV).unwrap()), "secret-from-env");
    v["client_assertion"] = json!({"alg": "PS256"});
    let cfg = parse_value(&v, &jwk_env(&[(ENV_CLIENT_SECRET, "s")])).unwrap();
    assert_eq!(assertion_settings(&cfg).alg, SigningAlg::Ps256);
}

#[test]
fn secret_and_jwk_together_are_refused() {
    let mut v = minimal();
    v["client_secret"] = json!("s");
    v["client_jwk"] = json!("${AZURE_APP_JWK}");
    let e = parse_value(&v, &jwk_env(&[])).unwrap_err();
    assert_eq!(e.field, "client_jwk");
    assert!(e.problem.contains("not both"), "{e}");
}

#[test]
fn bad_jwk_and_assertion_settings_are_refused_by_name() {
    let mut v = minimal();
    v["client_jwk"] = json!("{\"kty\": \"RSA\", \"n\": \"secret-material\"}");
    let e = parse_value(&v, ENV).unwrap_err();
    assert_eq!(e.field, "client_jwk");
    assert!(!e.problem.contains("secret-material"), "{e}");
    let mut v = minimal();
    v["client_assertion"] = json!({"lifetime_s": 601});
    assert_eq!(
        parse_value(&v, &jwk_env(&[])).unwrap_err().field,
        "client_assertion.lifetime_s"
    );
    let mut v = minimal();
    v["client_assertion"] = json!({"alg": "HS256"});
    assert!(parse_value(&v, &jwk_env(&[]))
        .unwrap_err()
        .field
        .starts_with("client_assertion"));
}

#[test]
fn an_assertion_is_sent_again_for_half_its_lifetime_by_default_with_on_behalf_of_only() {
    let reuse = |cfg: &Config| -> Vec<u64> {
        let settings = cfg.providers.iter().map(|p| match &p.client_auth {
            ClientAuth::PrivateKey(settings) => settings.reuse_s,
            other => panic!("{other:?} where a private key was expected"),
        });
        settings.collect()
    };
    let env = jwk_env(&[
        (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
        (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
    ]);
    // on_behalf_of, client_credentials, token_exchange.
    assert_eq!(reuse(&parse_value(&mixed(), &env).unwrap()), [30, 0, 0]);
    let mut v = mixed();
    v["client_assertion"] = json!({"lifetime_s": 600});
    v["providers"]["tokenx"]["client_assertion"] = json!({"reuse_s": 20});
    assert_eq!(reuse(&parse_value(&v, &env).unwrap()), [300, 0, 20]);
    v["client_assertion"] = json!({"reuse_s": 0});
    assert_eq!(reuse(&parse_value(&v, &env).unwrap()), [0, 0, 20]);
}

#[test]
fn an_assertion_sent_again_after_it_expires_is_refused_by_name() {
    let mut v = minimal();
    v["client_assertion"] = json!({"lifetime_s": 60, "reuse_s": 60});
    let e = parse_value(&v, &jwk_env(&[])).unwrap_err();
    assert_eq!(e.field, "client_assertion.reuse_s");
    assert!(e.problem.contains("less than"), "{e}");
    let mut v = mixed();
    v["providers"]["tokenx"]["client_assertion"] = json!({"reuse_s": "10"});
    let env = jwk_env(&[
        (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
        (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
    ]);
    let e = parse_value(&v, &env).unwrap_err();
    assert_eq!(e.field, "providers.tokenx.client_assertion.reuse_s");
}

fn mixed() -> Value {
    json!({
        "token_cluster": "entra_id",
        "providers": {
            "app": {"token_cluster": "entra_id", "grant": "client_credentials",
                    "existing_authorization": "keep"},
            "tokenx": {"token_cluster": "tokenx", "grant": "token_exchange",
                       "client_jwk": "${AZURE_APP_JWK}",
                       "client_assertion": {"alg": "RS256"}}
        },
        "targets": [
            {"host": "obo.example", "scope": "api://obo/.default"},
            {"host": "app.example", "provider": "app", "scope": "api://app/.default"},
            {"host": "tx.example", "provider": "tokenx", "audience": "dev:team:app"}
        ]
    })
}

#[test]
fn providers_each_get_their_grant_defaults_and_targets_find_theirs() {
    let tokenx_env: Vec<(&'static str, &'static str)> = jwk_env(&[
        (ENV_CLIENT_SECRET, "azure-secret"),
        (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
        (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
    ]);
    let cfg = parse_value(&mixed(), &tokenx_env).unwrap();
    let names: Vec<(&str, Grant)> = cfg
        .providers
        .iter()
        .map(|p| (p.name.as_str(), p.grant))
        .collect();
    assert_eq!(
        names,
        [
            ("default", Grant::OnBehalfOf),
            ("app", Grant::ClientCredentials),
            ("tokenx", Grant::TokenExchange)
        ]
    );
    let tokenx = &cfg.providers[2];
    assert_eq!(tokenx.token_endpoint.url, "https://tokenx.example/token");
    assert_eq!(tokenx.client_id, "dev:team:me");
    assert_eq!(
        cfg.providers[1].existing_authorization,
        ExistingAuthorization::Keep
    );
    assert_eq!(cfg.providers[1].client_id, "client-from-env");
    let targets: Vec<(usize, &str)> = cfg
        .targets
        .iter()
        .map(|t| (t.provider, t.resource.as_str()))
        .collect();
    assert_eq!(
        targets,
        [
            (0, "api://obo/.default"),
            (1, "api://app/.default"),
            (2, "dev:team:app")
        ]
    );
}

#[test]
fn token_exchange_defaults_to_the_token_x_variables() {
    let mut v = mixed();
    v["providers"]["tokenx"]
        .as_object_mut()
        .unwrap()
        .remove("client_jwk");
    let jwk: &'static str = Box::leak(crate::testing::test_key::jwk().into_boxed_str());
    let vars = jwk_env(&[
        (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
        (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
        (ENV_TOKEN_X_JWK, jwk),
    ]);
    let cfg = parse_value(&v, &vars).unwrap();
    assert!(matches!(
        cfg.providers[2].client_auth,
        ClientAuth::PrivateKey(_)
    ));
    // Without TOKEN_X_PRIVATE_JWK, the Azure secret is not a fallback for TokenX.
    let vars = jwk_env(&[
        (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
        (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
    ]);
    let e = parse_value(&v, &vars).unwrap_err();
    assert_eq!(e.field, "providers.tokenx.client_secret");
    assert!(e.problem.contains(ENV_TOKEN_X_JWK), "{e}");
}

#[test]
fn provider_mistakes_are_named() {
    let vars = jwk_env(&[
        (ENV_TOKEN_X_ENDPOINT, "https://tokenx.example/token"),
        (ENV_TOKEN_X_CLIENT_ID, "dev:team:me"),
    ]);
    type Change = Box<dyn Fn(&mut Value)>;
    let cases: Vec<(Change, &str)> = vec![
        (
            Box::new(|v| v["targets"][1]["provider"] = json!("nope")),
            "targets[1].provider",
        ),
        (
            Box::new(|v| {
                v["targets"][2]["scope"] = json!("api://x/.default");
            }),
            "targets[2].audience",
        ),
        (
            Box::new(|v| {
                v["targets"][1].as_object_mut().unwrap().remove("scope");
                v["targets"][1]["audience"] = json!("a");
            }),
            "targets[1].scope",
        ),
        (
            Box::new(|v| {
                v["providers"]["app"]
                    .as_object_mut()
                    .unwrap()
                    .remove("token_cluster");
            }),
            "providers.app.token_cluster",
        ),
        (
            Box::new(|v| v["providers"]["tokenx"]["existing_authorization"] = json!("keep")),
            "providers.tokenx.existing_authorization",
        ),
        (
            Box::new(|v| v["providers"]["app"]["grant"] = json!("password")),
            "providers",
        ),
        (
            Box::new(|v| v["providers"]["default"] = json!({"token_cluster": "x"})),
            "providers.default",
        ),
    ];
    for (change, field) in cases {
        let mut v = mixed();
        change(&mut v);
        let e = parse_value(&v, &vars).unwrap_err();
        assert!(e.field.starts_with(field), "{field}: {e}");
    }
}

#[test]
fn the_default_provider_is_needed_only_when_a_target_uses_it() {
    let v = json!({
        "providers": {"app": {"token_cluster": "entra_id", "grant": "client_credentials"}},
        "targets": [{"host": "app.example", "provider": "app", "scope": "api://app/.default"}]
    });
    let cfg = parse_value(&v, ENV).unwrap();
    assert_eq!(cfg.providers.len(), 1);
    assert_eq!(cfg.targets[0].provider, 0);
    let mut v = v;
    v["targets"]
        .as_array_mut()
        .unwrap()
        .push(json!({"host": "obo.example", "scope": "api://obo/.default"}));
    let e = parse_value(&v, ENV).unwrap_err();
    assert_eq!(e.field, "token_cluster");
}

#[test]
fn secret_never_shows_in_debug_output() {
    let cfg = parse_value(&minimal(), ENV).unwrap();
    let dump = format!("{cfg:?}");
    assert!(!dump.contains("secret-from-env"), "{dump}");
}

fn source_of(cfg: &Config) -> &crate::assertion_source::AssertionSource {
    match &cfg.providers[0].client_auth {
        ClientAuth::Fetched(source) => source,
        other => panic!("{other:?} where a fetched assertion was expected"),
    }
}

#[test]
fn an_assertion_source_replaces_the_secret_with_its_format_defaults() {
    let mut v = minimal();
    v["client_assertion_source"] = json!({"cluster": "federated_token"});
    let cfg = parse_value(&v, &ENV[..2]).unwrap();
    let source = source_of(&cfg);
    assert_eq!(
        (
            source.cluster.as_str(),
            source.path.as_str(),
            source.authority.as_str()
        ),
        ("federated_token", "/", "federated_token")
    );
    v["client_assertion_source"] = json!({"cluster": "imds", "format": "imds"});
    let cfg = parse_value(&v, &ENV[..2]).unwrap();
    let source = source_of(&cfg);
    assert_eq!(source.path, crate::assertion_source::IMDS_PATH);
    assert_eq!(source.authority, "169.254.169.254");
}

#[test]
fn a_bad_assertion_source_is_refused_by_name() {
    let cases = [
        (
            json!({"client_assertion_source": {"path": "/"}}),
            "client_assertion_source.cluster",
        ),
        (
            json!({"client_assertion_source": {"cluster": "c", "path": "token"}}),
            "client_assertion_source.path",
        ),
        (
            json!({"client_assertion_source": {"cluster": "c", "format": "file"}}),
            "client_assertion_source.format",
        ),
        (
            json!({"client_assertion_source": {"cluster": "c", "client_id": "x"}}),
            "client_assertion_source.client_id",
        ),
        (
            json!({"client_assertion_source": {"cluster": "c"}, "client_secret": "s"}),
            "client_assertion_source",
        ),
        (
            json!({"client_assertion_source": {"cluster": "c"}, "client_assertion": {"lifetime_s": 60}}),
            "client_assertion",
        ),
        (
            json!({"client_assertion_source": {"cluster": "c", "timeout": 1}}),
            "client_assertion_source.timeout",
        ),
    ];
    for (extra, field) in cases {
        let mut v = minimal();
        for (k, value) in extra.as_object().unwrap() {
            v[k] = value.clone();
        }
        assert_eq!(
            parse_value(&v, &ENV[..2]).unwrap_err().field,
            field,
            "{extra}"
        );
    }
}

const WORKLOAD_IDENTITY: &[(&str, &str)] = &[
    (ENV_WI_CLIENT_ID, "wi-client"),
    (ENV_WI_TENANT_ID, "72f988bf-86f1-41af-91ab-2d7cd011db47"),
    (ENV_WI_AUTHORITY_HOST, "https://login.microsoftonline.com/"),
    (
        ENV_WI_TOKEN_FILE,
        "/var/run/secrets/azure/tokens/azure-identity-token",
    ),
];

#[test]
fn workload_identity_alone_configures_the_provider_from_targets_only() {
    let v =
        json!({"targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]});
    let cfg = parse_value(&v, WORKLOAD_IDENTITY).unwrap();
    let provider = &cfg.providers[0];
    assert_eq!(provider.client_id, "wi-client");
    assert_eq!(
        provider.token_endpoint.url,
        "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
    );
    assert_eq!(
        provider.token_cluster,
        "outbound|80||login.microsoftonline.com"
    );
    let source = source_of(&cfg);
    assert_eq!(
        (source.cluster.as_str(), source.path.as_str()),
        (crate::assertion_source::FEDERATED_TOKEN_CLUSTER, "/")
    );
}

#[test]
fn configuration_and_the_nais_variables_come_before_workload_identity() {
    let env: &'static [(&str, &str)] =
        Box::leak([ENV, WORKLOAD_IDENTITY].concat().into_boxed_slice());
    let cfg = parse_value(&minimal(), env).unwrap();
    assert_eq!(secret_of(&cfg), "secret-from-env");
    assert_eq!(cfg.providers[0].client_id, "client-from-env");
    assert_eq!(
        cfg.providers[0].token_endpoint.url,
        "https://login.example/tenant/oauth2/v2.0/token"
    );
    let mut v = minimal();
    v["client_id"] = json!("configured-client");
    v["token_endpoint"] = json!("https://login.example/other/oauth2/v2.0/token");
    let cfg = parse_value(&v, WORKLOAD_IDENTITY).unwrap();
    assert_eq!(cfg.providers[0].client_id, "configured-client");
    assert_eq!(
        cfg.providers[0].token_endpoint.url,
        "https://login.example/other/oauth2/v2.0/token"
    );
    assert_eq!(cfg.providers[0].token_cluster, "entra_id");
    assert!(matches!(
        cfg.providers[0].client_auth,
        ClientAuth::Fetched(_)
    ));
}

#[test]
fn without_a_token_file_the_workload_identity_variables_configure_nothing() {
    let v =
        json!({"targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]});
    let err = parse_value(&v, &WORKLOAD_IDENTITY[..3]).unwrap_err();
    assert_eq!(err.field, "token_cluster");
}

#[test]
fn a_token_endpoint_per_tenant_needs_allowed_tenants_and_on_behalf_of() {
    let endpoint = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token";
    let mut v = minimal();
    v["token_endpoint"] = json!(endpoint);
    assert_eq!(error_of(v.clone()).field, "allowed_tenants");
    v["allowed_tenants"] = json!(["*"]);
    let cfg = parse_value(&v, ENV).unwrap();
    let endpoint = &cfg.providers[0].token_endpoint;
    assert!(endpoint.per_tenant);
    assert_eq!(endpoint.path, "/{tenant}/oauth2/v2.0/token");
    assert_eq!(
        endpoint.path_for(Some("72f988bf-86f1-41af-91ab-2d7cd011db47")),
        "/72f988bf-86f1-41af-91ab-2d7cd011db47/oauth2/v2.0/token"
    );
    let refused = [
        (
            json!({"allowed_tenants": ["*", "72f988bf-86f1-41af-91ab-2d7cd011db47"]}),
            "allowed_tenants",
        ),
        (
            json!({"grant": "client_credentials", "allowed_tenants": null}),
            "token_endpoint",
        ),
        (
            json!({"token_endpoint": "https://{tenant}.example/oauth2/v2.0/token"}),
            "token_endpoint",
        ),
        (
            json!({"token_endpoint": "https://login.example/{tenant}/{tenant}/token"}),
            "token_endpoint",
        ),
        // The stand-in GUID written out beside {tenant} must not pass {tenant} in the host or
        // the query off as one in the path.
        (
            json!({"token_endpoint": "https://{tenant}.example/00000000-0000-0000-0000-000000000000/token"}),
            "token_endpoint",
        ),
        (
            json!({"token_endpoint": "https://login.example/00000000-0000-0000-0000-000000000000/token?t={tenant}"}),
            "token_endpoint",
        ),
    ];
    for (extra, field) in refused {
        let mut v = v.clone();
        for (k, value) in extra.as_object().unwrap() {
            if value.is_null() {
                v.as_object_mut().unwrap().remove(k);
            } else {
                v[k] = value.clone();
            }
        }
        assert_eq!(parse_value(&v, ENV).unwrap_err().field, field, "{extra}");
    }
}

#[test]
fn a_private_key_cannot_sign_for_every_tenant() {
    let mut v = minimal();
    v["token_endpoint"] = json!("https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token");
    v["allowed_tenants"] = json!(["*"]);
    v["client_jwk"] = crate::json::parse(crate::testing::test_key::jwk()).unwrap();
    assert_eq!(parse_value(&v, &ENV[..2]).unwrap_err().field, "client_jwk");
}

#[test]
fn resource_indicators_are_absolute_uris_for_the_grants_that_take_them() {
    let target = |resource: Value, grant: &str| {
        json!({
            "token_cluster": "entra_id", "grant": grant,
            "targets": [{"host": "mcp.example.com", "scope": "api://tools/.default", "resource": resource}]
        })
    };
    let cfg = parse_value(
        &target(json!("https://mcp.example.com/"), "client_credentials"),
        ENV,
    )
    .unwrap();
    assert_eq!(cfg.targets[0].indicators, ["https://mcp.example.com/"]);
    let refused = [
        (
            json!("https://mcp.example.com/"),
            "on_behalf_of",
            "targets[0].resource",
        ),
        (
            json!("https://mcp.example.com/#part"),
            "client_credentials",
            "targets[0].resource[0]",
        ),
        (
            json!(["https://a.example/", "/relative"]),
            "client_credentials",
            "targets[0].resource[1]",
        ),
        (json!([]), "client_credentials", "targets[0].resource"),
        (json!(7), "client_credentials", "targets[0].resource"),
    ];
    for (resource, grant, field) in refused {
        let err = parse_value(&target(resource.clone(), grant), ENV).unwrap_err();
        assert_eq!(err.field, field, "{resource} with {grant}");
    }
}

#[test]
fn workload_identitys_token_cluster_is_no_default_for_an_endpoint_on_another_host() {
    let mut v =
        json!({"targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]});
    v["token_endpoint"] = json!("https://idp.example.com/realms/x/protocol/openid-connect/token");
    v["client_id"] = json!("configured-client");
    let err = parse_value(&v, WORKLOAD_IDENTITY).unwrap_err();
    assert_eq!(err.field, "token_cluster");
    assert!(err.to_string().contains("idp.example.com"), "{err}");
    // On the authority host itself, it still is.
    v["token_endpoint"] = json!("https://login.microsoftonline.com/other/oauth2/v2.0/token");
    let cfg = parse_value(&v, WORKLOAD_IDENTITY).unwrap();
    assert_eq!(
        cfg.providers[0].token_cluster,
        "outbound|80||login.microsoftonline.com"
    );
}

/// A `token_exchange` provider `sts` delegating to the `client_credentials` provider `agent`.
fn delegating(actor: Value) -> Value {
    json!({
        "providers": {
            "agent": {"token_cluster": "entra_id", "grant": "client_credentials",
                      "client_id": "agent-identity", "client_secret": "s"},
            "sts": {"token_cluster": "sts", "grant": "token_exchange",
                    "token_endpoint": "https://sts.example/token",
                    "client_id": "agent-app", "client_secret": "s", "actor": actor},
            "obo": {"token_cluster": "entra_id"}
        },
        "targets": [{"host": "api.example.com", "audience": "api://x", "provider": "sts"}]
    })
}

#[test]
fn an_actor_names_a_client_credentials_provider_and_its_scope() {
    let cfg = parse_value(
        &delegating(json!({"provider": "agent", "scope": "api://sts/.default"})),
        ENV,
    )
    .unwrap();
    let sts = cfg.providers.iter().find(|p| p.name == "sts").unwrap();
    let actor = sts.actor.as_ref().unwrap();
    assert_eq!(cfg.providers[actor.provider].name, "agent");
    assert_eq!(actor.scope, "api://sts/.default");
    assert_eq!(
        actor.token_type,
        "urn:ietf:params:oauth:token-type:access_token"
    );
}

#[test]
fn a_wrong_actor_is_refused_naming_its_field() {
    for (actor, field, says) in [
        (
            json!({"scope": "api://sts/.default"}),
            "providers.sts.actor.provider",
            "required",
        ),
        (
            json!({"provider": "nobody", "scope": "s"}),
            "providers.sts.actor.provider",
            "no provider",
        ),
        (
            json!({"provider": "obo", "scope": "s"}),
            "providers.sts.actor.provider",
            "client_credentials",
        ),
        (
            json!({"provider": "agent"}),
            "providers.sts.actor.scope",
            "required",
        ),
        (
            json!({"provider": "agent", "scope": "s", "token_type": "access token"}),
            "providers.sts.actor.token_type",
            "URI",
        ),
        (
            json!({"provider": "agent", "scope": "s", "actor_token": "x"}),
            "providers.sts.actor.actor_token",
            "not a known field",
        ),
    ] {
        let e = error_of(delegating(actor.clone()));
        assert_eq!(e.field, field, "{actor}");
        assert!(e.problem.contains(says), "{actor}: {e}");
    }
    let mut v = delegating(json!(null));
    v["providers"]["obo"]["actor"] = json!({"provider": "agent", "scope": "s"});
    let e = error_of(v);
    assert_eq!(e.field, "providers.obo.actor");
    assert!(e.problem.contains("token_exchange"), "{e}");
}
