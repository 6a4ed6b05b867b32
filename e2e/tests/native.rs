//! The native build (`libentra_obo_native.so`) as users meet it: an Envoy in the supported window
//! (1.38 to 1.40) loads it and exchanges tokens through it; a configuration with a wrong field is
//! refused with the field named; an older Envoy will not load it; and (`threads`) its one state
//! shared by Envoy's threads. Run with `ENVOY_BIN` at each supported Envoy (`make e2e-native`,
//! which `make test` runs for each, along with the rest of the suite against this build).

use std::collections::BTreeSet;
use std::process::Command;

use obo_e2e::client::bearer;
use obo_e2e::envoy::{
    envoy_bin, envoy_bin_of, envoy_version, is_native_filter_line, native_path, native_supports,
    Build, Envoy, EnvoyOptions,
};
use obo_e2e::mock_idp::{obo_token_for, MockIdp, CLIENT_SECRET};
use obo_e2e::stack::{plugin_config, Stack, API_SCOPE};
use obo_e2e::user_token;
use serde_json::{json, Value};

mod gateway;
mod threads;

/// The Envoy under test, which must be one the native build supports.
fn supported_envoy_version() -> String {
    let version = envoy_version(&envoy_bin());
    assert!(
        native_supports(&version),
        "ENVOY_BIN is Envoy {version:?}; the native tests need 1.38 to 1.40 (make e2e-native)"
    );
    version
}

fn native(opts: &mut EnvoyOptions) {
    opts.build = Build::Native;
}

/// Whether the module logged, at `level`, a line holding every one of `parts`.
fn logged(log: &str, level: &str, parts: &[&str]) -> bool {
    log.lines().any(|l| {
        is_native_filter_line(l)
            && l.contains(&format!("[{level}]"))
            && parts.iter().all(|p| l.contains(p))
    })
}

#[test]
fn a_supported_envoy_loads_the_module_and_it_exchanges_the_token() {
    let version = supported_envoy_version();
    let s = Stack::start_with(json!({}), native);
    let token = user_token("alice");
    let r = s.get("api.example.com", "/orders", Some(&bearer(&token)));
    assert_eq!(r.status, 200, "{}", s.envoy.log());
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization,
        vec![bearer(&obo_token_for(&token, API_SCOPE))]
    );
    s.upstream.assert_never_saw(&token);

    let log = s.envoy.log();
    // The ABI version the module presents: Envoy's own in 1.38 and 1.39, an older one in 1.40.
    let handshake = if version.starts_with("1.40.") {
        "Dynamic module ABI version v0.1.0 is deprecated"
    } else {
        "Dynamic module ABI version v0.1.0 matched"
    };
    assert!(log.contains(handshake), "Envoy {version}:\n{log}");
    let summary = "2 target(s); unmatched: strip";
    assert!(logged(&log, "info", &[summary]), "{log}");
    assert!(
        !log.contains("][error][dynamic_modules]") && !log.contains("][critical][dynamic_modules]"),
        "no error from the module's calls:\n{log}"
    );
}

/// A route's own 401 with a claims challenge (a local reply, as another filter's would be) is not
/// the upstream's: the cached token stays. (1.38 has no attribute that tells them apart; the
/// module watches for Envoy's local-reply hook.)
#[test]
fn a_local_reply_is_told_from_the_upstreams_response() {
    supported_envoy_version();
    let s = Stack::start_with(json!({}), |opts| {
        native(opts);
        opts.bootstrap_patch = Some(Box::new(|config: &mut Value| {
            let routes = &mut config["static_resources"]["listeners"][0]["filter_chains"][0]
                ["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"];
            if let Some(routes) = routes.as_array_mut() {
                routes.insert(
                    0,
                    json!({
                        "match": {"prefix": "/step-up"},
                        "direct_response": {"status": 401},
                        "response_headers_to_add": [{"header": {
                            "key": "www-authenticate",
                            "value": "Bearer error=\"insufficient_claims\", claims=\"e30=\""
                        }}]
                    }),
                );
            }
        }));
    });
    let token = user_token("alice");
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&token))).status,
        200
    );
    let r = s.get("api.example.com", "/step-up", Some(&bearer(&token)));
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&token))).status,
        200
    );
    assert_eq!(s.idp.count(), 1, "the cached token was kept");
    assert_eq!(
        s.envoy
            .obo_counter_once("obo_upstream_claims_challenges", 0),
        0
    );
}

/// Envoy's log when it refused to start with `config` as the filter's configuration.
fn refused_log(config: String) -> String {
    let idp = MockIdp::start();
    let mut opts = EnvoyOptions::new(&Value::Null, idp.port, idp.port);
    opts.plugin_config = config;
    opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
    native(&mut opts);
    match Envoy::try_start(opts) {
        Ok(envoy) => panic!("envoy accepted the configuration:\n{}", envoy.log()),
        Err(log) => log,
    }
}

#[test]
fn a_configuration_with_a_wrong_field_is_refused_by_name() {
    supported_envoy_version();
    let idp = MockIdp::start();
    let mut cfg = plugin_config(&idp, &json!({}));
    cfg["token_clustr"] = json!("entra_id");
    cfg["targets"][1]["scope"] = json!(7);
    let log = refused_log(cfg.to_string());
    // Every problem, each naming its field.
    for field in ["token_clustr", "targets[1].scope"] {
        let problem = format!("invalid configuration: {field}");
        assert!(logged(&log, "error", &[&problem]), "{log}");
    }
    assert!(log.contains("Failed to initialize dynamic module"), "{log}");
}

#[test]
fn an_unset_environment_reference_is_refused_by_name() {
    supported_envoy_version();
    let idp = MockIdp::start();
    let mut cfg = plugin_config(&idp, &json!({}));
    cfg["client_id"] = json!("${NO_SUCH_VARIABLE}");
    let log = refused_log(cfg.to_string());
    let problem = ["invalid configuration", "client_id", "NO_SUCH_VARIABLE"];
    assert!(logged(&log, "error", &problem), "{log}");
}

/// The module needs nothing beside Envoy but the C library: not `libgcc_s.so.1`, which Envoy's
/// distroless images (Envoy Gateway's default) lack. Its unwinder is linked in (native/build.rs).
#[test]
fn the_module_needs_no_shared_library_but_the_c_library() {
    let module = std::fs::read(obo_e2e::envoy::native_path()).expect("the module");
    assert!(memchr::memmem::find(&module, b"libgcc_s.so").is_none());
    assert!(memchr::memmem::find(&module, b"libc.so.6").is_some());
}

/// The newest glibc symbol version the module needs is the one docs/native.md names: 2.35, for
/// `_dl_find_object`, which the linked-in unwinder uses. A newer one would refuse to load on
/// systems the page says it runs on.
#[test]
fn the_module_needs_glibc_2_35_at_most() {
    let module = std::fs::read(obo_e2e::envoy::native_path()).expect("the module");
    let newest = memchr::memmem::find_iter(&module, b"GLIBC_2.")
        .filter_map(|at| {
            let digits = module[at + 8..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            std::str::from_utf8(&module[at + 8..at + 8 + digits])
                .ok()?
                .parse::<u32>()
                .ok()
        })
        .max();
    assert!(
        newest.is_some_and(|minor| minor <= 35),
        "the newest GLIBC_2.x minor version the module needs: {newest:?}"
    );
}

/// What a user of Envoy 1.36 or 1.37 sees: Envoy refuses to start, naming the module. (1.37
/// reports the module "not found in any search path": its loader tries a second path after the
/// first failed on a callback 1.37 lacks, and reports the second failure.)
#[test]
fn an_envoy_before_1_38_does_not_load_the_module() {
    for (version, says) in [
        (
            "1.36.4",
            "undefined symbol: envoy_dynamic_module_callback_http_get_headers_size",
        ),
        (
            "1.37.0",
            "libentra_obo_native.so not found in any search path",
        ),
    ] {
        let idp = MockIdp::start();
        let mut opts = EnvoyOptions::new(&plugin_config(&idp, &json!({})), idp.port, idp.port);
        opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
        opts.envoy_bin = Some(envoy_bin_of(version));
        native(&mut opts);
        let log = match Envoy::try_start(opts) {
            Ok(envoy) => panic!("Envoy {version} loaded the module:\n{}", envoy.log()),
            Err(log) => log,
        };
        assert!(
            log.contains("Failed to load dynamic module") && log.contains(says),
            "Envoy {version}:\n{log}"
        );
    }
}

/// The names in Envoy's binary that start with `prefix`: the hooks it looks up in a module. (Its
/// string table may run a name into the next string, which `exported_or_run_on` allows for.)
fn names_in(binary: &[u8], prefix: &str) -> BTreeSet<String> {
    let is_name = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_';
    memchr::memmem::find_iter(binary, prefix.as_bytes())
        .map(|start| {
            let run = &binary[start..];
            let mut len = run.iter().take_while(|b| is_name(b)).count();
            // Cut where the next hook name begins.
            if let Some(next) = memchr::memmem::find(&run[1..len], b"envoy_dynamic_module_") {
                len = next + 1;
            }
            String::from_utf8_lossy(&run[..len]).into_owned()
        })
        .collect()
}

/// `name` is exported, or is an exported name run into the string after it.
fn exported_or_run_on(exported: &BTreeSet<String>, name: &str) -> bool {
    exported.iter().any(|e| name.starts_with(e.as_str()))
}

/// Envoy resolves a module's hooks by name, so the module exports every HTTP-filter hook this
/// Envoy looks up (those it does nothing with too, so that loading never fails on a missing
/// symbol), and nothing else: no Rust symbol is visible to Envoy or to another module.
#[test]
fn the_module_exports_every_hook_this_envoy_looks_up_and_nothing_else() {
    supported_envoy_version();
    let nm = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(native_path())
        .output()
        .expect("nm (binutils) reads the module's exports");
    let exported: BTreeSet<String> = String::from_utf8_lossy(&nm.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    let stray: Vec<&String> = exported
        .iter()
        .filter(|n| !n.starts_with("envoy_dynamic_module_on_"))
        .collect();
    assert!(stray.is_empty(), "exported besides the hooks: {stray:?}");

    let envoy = std::fs::read(envoy_bin()).expect("the Envoy binary");
    let mut wanted = names_in(&envoy, "envoy_dynamic_module_on_http_filter_");
    wanted.insert("envoy_dynamic_module_on_program_init".into());
    assert!(
        wanted.len() > 25,
        "the hooks are found in Envoy: {wanted:?}"
    );
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|n| !exported_or_run_on(&exported, n))
        .collect();
    assert!(
        missing.is_empty(),
        "hooks Envoy looks up but the module lacks: {missing:?}"
    );
    let unused: Vec<&String> = exported
        .iter()
        .filter(|e| !wanted.iter().any(|n| n.starts_with(e.as_str())))
        .collect();
    assert!(
        unused.is_empty(),
        "hooks this Envoy never looks up: {unused:?}"
    );
}
