//! No secret in the sidecar: the filter authenticates with a client assertion it fetches through
//! Envoy. The token file is served by the shipped recipe's internal listener (Lua, every Envoy;
//! the file server, 1.38.2 and later) from a temporary folder the test rewrites; the mock token
//! endpoint trusts a `client_assertion` only while it is the file's content, and answers any other
//! `invalid_client`, as Entra ID does for a federated credential. The managed identity form asks a
//! mock metadata service.

use std::time::Duration;

use obo_e2e::client::{bearer, get};
use obo_e2e::envoy::{cluster, Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, MockIdp, CLIENT_ID};
use obo_e2e::stack::{plugin_config, API_SCOPE};
use obo_e2e::upstream::Upstream;
use obo_e2e::workload_identity::{
    envoy_version, federated_token, token_file_server, MetadataAnswer, MockMetadata, TokenFile,
    FILE_SERVER_RECIPE, LUA_RECIPE,
};
use obo_e2e::{now, user_token};
use serde_json::{json, Value};

const APP_SCOPE: &str = "api://prod.team.app/.default";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

struct World {
    file: TokenFile,
    idp: MockIdp,
    upstream: Upstream,
    envoy: Envoy,
}

/// A projected token valid for an hour.
fn fresh(n: u64) -> String {
    federated_token(n, now() + 3600)
}

/// The filter with no secret and no key anywhere, `AZURE_FEDERATED_TOKEN_FILE` naming the token
/// file (in the VM, so workload identity configures the provider, and in Envoy, for Lua), the
/// recipe's internal listener serving it, one worker (each worker holds its own assertion).
fn world(
    token: &str,
    extra: Value,
    adjust: impl FnOnce(&mut EnvoyOptions, &MockIdp, &TokenFile),
) -> World {
    let file = TokenFile::with(token);
    let idp = MockIdp::start();
    idp.expect_federated(file.current());
    let upstream = Upstream::start();
    let mut config = plugin_config(&idp, &extra);
    config.as_object_mut().unwrap().remove("client_secret");
    let mut opts = EnvoyOptions::new(&config, idp.port, upstream.port);
    opts.concurrency = 1;
    let path = file.path.display().to_string();
    opts.vm_env = vec![
        ("AZURE_FEDERATED_TOKEN_FILE".into(), path.clone()),
        // For providers that leave token_endpoint to the environment.
        ("AZURE_OPENID_CONFIG_TOKEN_ENDPOINT".into(), idp.endpoint()),
    ];
    opts.process_env = vec![("AZURE_FEDERATED_TOKEN_FILE".into(), path)];
    opts.bootstrap_patch = Some(token_file_server(LUA_RECIPE, |_| {}));
    adjust(&mut opts, &idp, &file);
    let envoy = Envoy::start(opts);
    World {
        file,
        idp,
        upstream,
        envoy,
    }
}

/// One more cluster on 127.0.0.1:`port`, beside the recipe's.
fn add_cluster(opts: &mut EnvoyOptions, name: &'static str, port: u16) {
    let before = opts.bootstrap_patch.take();
    opts.bootstrap_patch = Some(Box::new(move |b: &mut Value| {
        if let Some(patch) = before {
            patch(b);
        }
        b["static_resources"]["clusters"]
            .as_array_mut()
            .unwrap()
            .push(cluster(name, Some(port)));
    }));
}

/// `user`'s call to api.example.com: its status, and the Authorization the upstream saw (none
/// when nothing reached it).
fn call(w: &World, host: &str, user: &str) -> (u16, Option<String>, String) {
    let subject = user_token(user);
    let before = w.upstream.seen().len();
    let r = get(w.envoy.port, host, "/", Some(&bearer(&subject)));
    let seen = w.upstream.seen();
    let forwarded = (seen.len() > before).then(|| seen[seen.len() - 1].authorization.join(","));
    assert!(seen.len() <= before + 1);
    (r.status, forwarded, subject)
}

/// The `client_assertion` of each token request, in order.
fn assertions_sent(idp: &MockIdp) -> Vec<String> {
    idp.requests()
        .iter()
        .map(|r| r.field("client_assertion").unwrap_or("").to_string())
        .collect()
}

fn counter(w: &World, name: &str, expected: u64) -> u64 {
    w.envoy.obo_counter_once(name, expected)
}

#[test]
fn on_behalf_of_and_client_credentials_authenticate_with_the_token_file_and_no_secret() {
    let token = fresh(1);
    let w = world(
        &token,
        json!({
            "providers": {"app": {"token_cluster": "entra_id", "grant": "client_credentials",
                                  "token_endpoint": "${AZURE_OPENID_CONFIG_TOKEN_ENDPOINT}",
                                  "client_id": CLIENT_ID}},
            "targets": [
                {"host": "api.example.com", "scope": API_SCOPE},
                {"host": "app.example.com", "provider": "app", "scope": APP_SCOPE}
            ]
        }),
        |_, _, _| {},
    );
    let (status, forwarded, subject) = call(&w, "api.example.com", "alice");
    assert_eq!(status, 200, "{:?}", w.idp.violations());
    assert_eq!(forwarded, Some(bearer(&obo_token_for(&subject, API_SCOPE))));
    let (status, forwarded, _) = call(&w, "app.example.com", "alice");
    assert_eq!(status, 200, "{:?}", w.idp.violations());
    assert_eq!(forwarded, Some(bearer(&obo_token_for("", APP_SCOPE))));
    w.idp.assert_protocol_followed();
    let requests = w.idp.requests();
    let grants: Vec<_> = requests.iter().map(|r| r.field("grant_type")).collect();
    assert_eq!(
        grants,
        [
            Some("urn:ietf:params:oauth:grant-type:jwt-bearer"),
            Some("client_credentials")
        ]
    );
    for r in &requests {
        assert_eq!(r.field("client_assertion"), Some(token.as_str()));
        assert_eq!(r.field("client_assertion_type"), Some(ASSERTION_TYPE));
        assert_eq!(r.field("client_secret"), None);
    }
    assert_eq!(w.idp.invalid_client_count(), 0);
    // Each provider fetched the file once.
    assert_eq!(counter(&w, "obo_client_assertion_fetches", 2), 2);
    assert_eq!(counter(&w, "obo_client_assertion_fetch_failures", 0), 0);
}

/// Rotation in the middle of a run: Entra ID refuses the old token once the file holds a new
/// one, and the filter fetches the file again and sends the token request once more.
fn rotation(w: &World) -> (String, String) {
    let old = w.file.content().unwrap();
    let (status, _, _) = call(w, "api.example.com", "alice");
    assert_eq!(status, 200, "{:?}", w.idp.violations());
    let rotated = fresh(2);
    w.file.write(&rotated);
    let (status, forwarded, subject) = call(w, "api.example.com", "bob");
    assert_eq!(status, 200, "{:?}", w.idp.violations());
    assert_eq!(forwarded, Some(bearer(&obo_token_for(&subject, API_SCOPE))));
    (old, rotated)
}

#[test]
fn a_rotated_token_file_is_fetched_again_after_invalid_client() {
    let w = world(&fresh(1), json!({}), |_, _, _| {});
    let (old, rotated) = rotation(&w);
    assert_eq!(assertions_sent(&w.idp), [old.clone(), old, rotated]);
    assert_eq!(w.idp.invalid_client_count(), 1);
    w.idp.assert_protocol_followed();
    assert_eq!(counter(&w, "obo_client_assertion_fetches", 2), 2);
    assert_eq!(counter(&w, "obo_client_assertion_fetch_failures", 0), 0);
}

/// Alice's exchange with an assertion that expires `exp_in` seconds from now (token requests may
/// take 1 s to arrive), then the file renewed and no request until `quiet_until(exp)`; then Bob's
/// call, after `before_bob` had its say. The short assertion and the renewed one.
fn short_assertion_then_bob(
    exp_in: u64,
    quiet_until: impl Fn(u64) -> u64,
    before_bob: impl FnOnce(&World),
) -> (World, String, String) {
    let w = world(&fresh(1), json!({"token_timeout_ms": 1000}), |_, _, _| {});
    let exp = now() + exp_in;
    let short = federated_token(2, exp);
    w.file.write(&short);
    let (status, _, _) = call(&w, "api.example.com", "alice");
    assert_eq!(status, 200, "{:#?}", w.envoy.filter_log_lines());
    let renewed = fresh(3);
    w.file.write(&renewed);
    while now() < quiet_until(exp) {
        std::thread::sleep(Duration::from_millis(100));
    }
    before_bob(&w);
    let (status, forwarded, subject) = call(&w, "api.example.com", "bob");
    assert_eq!(status, 200, "{:#?}", w.envoy.filter_log_lines());
    assert_eq!(forwarded, Some(bearer(&obo_token_for(&subject, API_SCOPE))));
    (w, short, renewed)
}

#[test]
fn an_assertion_near_its_exp_is_not_sent_and_the_next_request_fetches_a_fresh_one() {
    // The filter sends no assertion within 30 s of its exp: this one, written once Envoy is up,
    // serves for a few seconds only, and runs out with no request.
    let (w, short, renewed) = short_assertion_then_bob(34, |exp| exp - 30, |_| {});
    // The stale one was never sent again: no invalid_client round trip.
    assert_eq!(assertions_sent(&w.idp), [short, renewed]);
    assert_eq!(w.idp.invalid_client_count(), 0);
    assert_eq!(counter(&w, "obo_client_assertion_fetches", 2), 2);
}

#[test]
fn an_assertion_is_fetched_again_ahead_of_its_exp_with_no_request_waiting() {
    // This one expires in 40 s and is fetched again from half its life on (20 s before its exp),
    // by the root on its own tick with no request waiting. The file rotates a few ticks later:
    // Bob's exchange sends the assertion fetched ahead (one that had to fetch would send the
    // rotated one), and once it is refused, the rotated one.
    let rotated = fresh(4);
    let (w, short, renewed) =
        short_assertion_then_bob(40, |exp| exp - 17, |w| w.file.write(&rotated));
    assert_eq!(assertions_sent(&w.idp), [short, renewed, rotated]);
    assert_eq!(counter(&w, "obo_client_assertion_fetches", 3), 3);
}

#[test]
fn a_managed_identity_token_from_the_metadata_service_is_the_assertion() {
    let identity = "11111111-2222-3333-4444-555555555555";
    let vm_token = fresh(7);
    let imds = MockMetadata::start(MetadataAnswer::Token(vm_token.clone()));
    let imds_port = imds.port;
    let w = world(
        &fresh(1),
        json!({"client_assertion_source": {"cluster": "imds", "format": "imds", "client_id": identity}}),
        |opts, idp, _| {
            idp.expect_federated(imds.current());
            opts.vm_env.clear();
            add_cluster(opts, "imds", imds_port);
        },
    );
    let (status, forwarded, subject) = call(&w, "api.example.com", "alice");
    assert_eq!(status, 200, "{:?}", w.idp.violations());
    assert_eq!(forwarded, Some(bearer(&obo_token_for(&subject, API_SCOPE))));
    let asked = imds.requests();
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].metadata.as_deref(), Some("true"));
    assert_eq!(
        asked[0].resource.as_deref(),
        Some("api://AzureADTokenExchange")
    );
    assert_eq!(asked[0].client_id.as_deref(), Some(identity));
    assert_eq!(assertions_sent(&w.idp), [vm_token]);
}

#[test]
fn a_failed_fetch_is_503_with_retry_after_and_nothing_reaches_the_upstream() {
    let imds = MockMetadata::start(MetadataAnswer::Stall(Duration::from_secs(5)));
    let imds_port = imds.port;
    // One target (and scope) per failure: a failed scope backs off.
    let w = world(
        &fresh(1),
        json!({
            "token_timeout_ms": 400,
            "backoff": {"default_s": 7},
            "providers": {"vm": {"token_cluster": "entra_id",
                                 "token_endpoint": "${AZURE_OPENID_CONFIG_TOKEN_ENDPOINT}",
                                 "client_id": CLIENT_ID,
                                 "client_assertion_source": {"cluster": "imds", "format": "imds"}}},
            "targets": [
                {"host": "gone.example.com", "scope": "api://gone/.default"},
                {"host": "junk.example.com", "scope": "api://junk/.default"},
                {"host": "stalled.example.com", "provider": "vm", "scope": "api://stalled/.default"},
                {"host": "broken.example.com", "provider": "vm", "scope": "api://broken/.default"}
            ]
        }),
        |opts, _, _| add_cluster(opts, "imds", imds_port),
    );
    let refused = |host: &str| {
        let r = get(w.envoy.port, host, "/", Some(&bearer(&user_token("alice"))));
        assert_eq!(r.status, 503, "{host}: {}", r.body);
        assert_eq!(r.header("retry-after"), Some("7"), "{host}");
    };
    // The file is gone: Lua answers 500.
    w.file.remove();
    refused("gone.example.com");
    // The file holds no JWT.
    w.file.write("not a token\n");
    refused("junk.example.com");
    // The metadata service takes longer than token_timeout_ms.
    refused("stalled.example.com");
    // The metadata service answers 500.
    imds.set(MetadataAnswer::Status(500));
    refused("broken.example.com");
    assert!(
        w.upstream.seen().is_empty(),
        "a request reached the upstream"
    );
    assert_eq!(w.idp.count(), 0, "a token request was sent");
    assert_eq!(counter(&w, "obo_client_assertion_fetch_failures", 4), 4);
    assert_eq!(counter(&w, "obo_client_assertion_fetches", 4), 4);
    let warnings: Vec<String> = w
        .envoy
        .filter_log_lines()
        .into_iter()
        .filter(|l| l.contains("client assertion of provider"))
        .collect();
    for why in [
        "from cluster azure_federated_token: answered 500",
        "from cluster azure_federated_token: answered 200 with no JWT",
        // Envoy answers a callout that timed out with its own 504.
        "from cluster imds: answered 504",
        "from cluster imds: answered 500",
    ] {
        assert!(
            warnings.iter().any(|l| l.contains(why)),
            "no log line says {why}: {warnings:#?}"
        );
    }
}

#[test]
fn zero_configuration_needs_only_targets_and_the_workload_identity_environment() {
    let token = fresh(1);
    let file = TokenFile::with(&token);
    let idp = MockIdp::start();
    idp.expect_federated(file.current());
    let upstream = Upstream::start();
    let config = json!({"targets": [{"host": "api.example.com", "scope": API_SCOPE}]});
    let mut opts = EnvoyOptions::new(&config, idp.port, upstream.port);
    opts.concurrency = 1;
    let path = file.path.display().to_string();
    opts.vm_env = vec![
        ("AZURE_FEDERATED_TOKEN_FILE".into(), path.clone()),
        ("AZURE_CLIENT_ID".into(), CLIENT_ID.into()),
        ("AZURE_TENANT_ID".into(), "test-tenant".into()),
        (
            "AZURE_AUTHORITY_HOST".into(),
            format!("http://127.0.0.1:{}/", idp.port),
        ),
    ];
    opts.process_env = vec![("AZURE_FEDERATED_TOKEN_FILE".into(), path)];
    opts.bootstrap_patch = Some(token_file_server(LUA_RECIPE, |_| {}));
    let idp_port = idp.port;
    // Istio's name for the authority host's cluster, which the filter defaults to.
    add_cluster(&mut opts, "outbound|80||127.0.0.1", idp_port);
    let w = World {
        envoy: Envoy::start(opts),
        file,
        idp,
        upstream,
    };
    let (status, forwarded, subject) = call(&w, "api.example.com", "alice");
    assert_eq!(status, 200, "{:?}", w.idp.violations());
    assert_eq!(forwarded, Some(bearer(&obo_token_for(&subject, API_SCOPE))));
    w.idp.assert_protocol_followed();
    let request = &w.idp.requests()[0];
    assert_eq!(request.field("client_id"), Some(CLIENT_ID));
    assert_eq!(request.field("client_assertion"), Some(token.as_str()));
    assert_eq!(
        request.host.as_deref(),
        Some(format!("127.0.0.1:{idp_port}").as_str())
    );
}

#[test]
fn no_log_line_at_trace_level_holds_the_assertion() {
    let w = world(&fresh(1), json!({}), |opts, _, _| {
        opts.wasm_log_level = "trace";
    });
    let (old, rotated) = rotation(&w);
    // And a failed fetch, whose answer is not logged either.
    w.file.write("junk-that-is-no-jwt");
    let (status, _, _) = call(&w, "api.example.com", "carol");
    assert_eq!(status, 503);
    let log = w.envoy.log();
    assert!(
        !w.envoy.filter_log_lines().is_empty(),
        "nothing logged at trace level"
    );
    for assertion in [&old, &rotated] {
        let payload = assertion.split('.').nth(1).unwrap();
        assert!(!log.contains(payload), "the assertion is in Envoy's log");
    }
    assert!(!log.contains("junk-that-is-no-jwt"));
}

#[test]
fn the_file_server_recipe_serves_the_token_file_on_envoy_1_38_2_and_later() {
    let version = envoy_version();
    if version < (1, 38, 2) {
        eprintln!(
            "skipped: Envoy {}.{}.{} has no file_server filter (1.38.2 and later have it)",
            version.0, version.1, version.2
        );
        return;
    }
    let w = world(&fresh(1), json!({}), |opts, _, file| {
        let (folder, name) = (
            file.folder().display().to_string(),
            file.path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
        opts.bootstrap_patch = Some(token_file_server(FILE_SERVER_RECIPE, move |listener| {
            let filter = &mut listener["filter_chains"][0]["filters"][0]["typed_config"]
                ["http_filters"][0]["typed_config"];
            filter["path_mappings"][0]["file_path_prefix"] = json!(folder);
            filter["directory_behaviors"][0]["default_file"] = json!(name);
        }));
    });
    let (old, rotated) = rotation(&w);
    assert_eq!(assertions_sent(&w.idp), [old.clone(), old, rotated]);
    w.idp.assert_protocol_followed();
}
