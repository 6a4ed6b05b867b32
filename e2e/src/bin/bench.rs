//! `make bench`: what the filter costs on the hot path, measured against the alternatives in one
//! Envoy process, side by side, with rounds interleaved so that the machine's noise hits every
//! variant alike. Prints markdown for docs/performance.md.
//!
//! BENCH_ROUNDS (default 5), BENCH_SECONDS per listener and round (default 4), BENCH_CONNECTIONS
//! (default 16), BENCH_PARTS (default `hot,instructions,cold,users,refresh,memory`),
//! BENCH_CONCURRENCY (default `1,2`).
//!
//! The `instructions` part counts Envoy's instructions per request for the builds' hits, their
//! floors and the alternatives (`COUNTED`), with valgrind's callgrind (`obo_e2e::callgrind`);
//! without valgrind it is skipped.
//!
//! The native build's cache hit (`make native`) comes beside the Wasm build's, direct and proxied,
//! where the Envoy loads it (1.38 and later), and so does the floor below it: the dynamic module
//! with no work of its own (`e2e/bench/bare-native`), alone and making the hit's Envoy calls.
//! BENCH_NATIVE_CALLS prices those calls one by one: a `;`-separated list of that module's
//! configurations, each an extra listener (default: none).
//!
//! BENCH_TOKEN_BYTES (default 1600) is the size of the hot path's tokens (one user's and many
//! users'), the caller's and the one it is exchanged for: Entra ID's are 1.5 to 2.5 KB.
//!
//! BENCH_ROUTES=N puts N prefix routes that no request matches before each listener's route, as a
//! sidecar with many routes in one virtual host has them: Envoy walks them on every route match.
//!
//! BENCH_SIDECAR_HEADERS=1 sends the headers of a typical service-to-service call with each
//! request (trace context, request id, client headers), as a sidecar sees them.
//!
//! BENCH_HOSTCALLS prices hostcalls one by one: a `;`-separated list of no-op configurations (see
//! `e2e/bench/noop`), each an extra listener; by default each of the hit's hostcalls alone, the
//! single-header read, and the three request-side ones together. Empty: none, and no trimmed no-op.
//! The no-op with only the exports entra-obo-filter keeps (`noop_trimmed.wasm`, made by `make
//! bench`) comes with them, and so does the filter with no SDK (`e2e/bench/bare`), alone and making
//! the hit's four hostcalls, direct and proxied: the least any filter making those calls can cost.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use obo_e2e::callgrind;
use obo_e2e::mock_idp::{Behaviour, MockIdp, CLIENT_ID, CLIENT_SECRET};
use obo_e2e::stack::API_SCOPE;
use obo_e2e::workload_identity::{
    federated_token, token_file_server, TokenFile, LUA_RECIPE, TOKEN_FILE_CLUSTER,
};
use serde_json::{json, Value};

/// A free port for one of the bench Envoy's listeners, never one handed out before in this run,
/// and below the system's range of ephemeral ports: a port the system handed out for
/// `127.0.0.1:0` is from that range, and may be taken by an outgoing connection (wrk's, Envoy's
/// own) in the moment before Envoy binds it.
fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_from.max(10_100));
    let mut given = GIVEN.lock().unwrap();
    // Start somewhere that depends on the process, so two benches rarely try the same ports.
    let mut port = low + (std::process::id() % u32::from(high - low)) as u16;
    for _ in low..high {
        port = if port + 1 >= high { low } else { port + 1 };
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// The bench's own inputs: the no-op and bare filters, the wrk script.
fn bench_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/bench"))
}

fn noop_wasm() -> PathBuf {
    bench_dir().join("noop/target/wasm32-wasip1/release/noop_filter.wasm")
}

/// The no-op filter with only the exports entra-obo-filter keeps (wasm/src/exports.json): Envoy
/// calls into it for the same callbacks, and no others.
fn noop_trimmed_wasm() -> PathBuf {
    bench_dir().join("noop/target/wasm32-wasip1/release/noop_trimmed.wasm")
}

/// The filter with no SDK (`e2e/bench/bare`): Envoy calls into it only for request and response
/// headers.
fn bare_wasm() -> PathBuf {
    bench_dir().join("bare/target/wasm32-wasip1/release/bare_filter.wasm")
}

/// The dynamic module with no work of its own (`make bench` puts it beside the native build).
fn bare_native() -> Option<PathBuf> {
    native_dir()
        .map(|dir| dir.join("libbare_native.so"))
        .filter(|p| p.exists())
}

const BARE_FLOOR: &str = "direct: bare Wasm + the hit's four hostcalls";
const BARE_FLOOR_PROXIED: &str = "proxied: bare Wasm + the hit's four hostcalls";

fn wasm_filter(name: &str, file: &Path, config: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name, "root_id": name, "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": name, "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": file}},
                    "environment_variables": {"key_values": {"AZURE_APP_CLIENT_SECRET": CLIENT_SECRET}}
                },
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config}
            }
        }
    })
}

fn obo_config(idp: &MockIdp, cluster: &str, max_entries: u32) -> String {
    json!({
        "token_cluster": cluster,
        "token_endpoint": idp.endpoint(),
        "client_id": CLIENT_ID,
        "client_secret": "${AZURE_APP_CLIENT_SECRET}",
        "targets": [{"host": "api.example.com", "scope": API_SCOPE}],
        "cache": {"max_entries": max_entries}
    })
    .to_string()
}

/// The same, authenticating with a private key: a signed assertion sent again for `reuse_s`
/// (None: the default, 30 s), or (0) a new one for every token request.
fn obo_config_with_key(
    idp: &MockIdp,
    cluster: &str,
    max_entries: u32,
    reuse_s: Option<u64>,
) -> String {
    let mut config: Value = obo_core::json::parse(obo_config(idp, cluster, max_entries)).unwrap();
    let fields = config.as_object_mut().unwrap();
    fields.remove("client_secret");
    fields.insert(
        "client_jwk".into(),
        json!(obo_e2e::client_key::client_key().jwk),
    );
    if let Some(reuse_s) = reuse_s {
        fields.insert("client_assertion".into(), json!({ "reuse_s": reuse_s }));
    }
    config.to_string()
}

/// The native build (`make native`) as a dynamic module HTTP filter; Envoy finds the library in
/// ENVOY_DYNAMIC_MODULES_SEARCH_PATH, which `start_envoy` sets.
fn native_filter(name: &str, config: &str) -> Value {
    json!({
        "name": name,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "entra_obo_native", "do_not_close": true},
            "filter_name": "entra_obo",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config}
        }
    })
}

/// The bare dynamic module (`e2e/bench/bare-native`) making the Envoy calls `calls` names.
fn bare_native_filter(calls: &str) -> Value {
    json!({
        "name": format!("bare_native_{}", calls.replace(',', "_")),
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "bare_native", "do_not_close": true},
            "filter_name": "bare",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": floor_calls(calls)}
        }
    })
}

fn native_dir() -> Option<PathBuf> {
    obo_e2e::envoy::native_path_if_built().and_then(|p| p.parent().map(Path::to_path_buf))
}

/// Whether the native build is there to measure (`make bench` builds it; Envoy 1.38 and later).
fn native_measured() -> bool {
    obo_e2e::envoy::native_path_if_built().is_some()
}

/// What the alternatives that set `Authorization` write: a token as long as the one the filter
/// writes, so that a proxied request carries as many bytes upstream with each of them.
fn static_authorization() -> String {
    format!("Bearer {}", "t".repeat(token_bytes()))
}

/// A floor module's configuration: its calls, and the size of the token it writes.
fn floor_calls(calls: &str) -> String {
    format!("{calls},size={}", token_bytes())
}

fn lua() -> String {
    format!(
        "function envoy_on_request(h) h:headers():replace('authorization', '{}') end",
        static_authorization()
    )
}

fn filters_for(kind: &str, idp: &MockIdp, max_entries: u32) -> Vec<Value> {
    let wasm = obo_e2e::envoy::wasm_path();
    match kind {
        "none" => vec![],
        "noop" => vec![wasm_filter("noop", &noop_wasm(), "")],
        "floor" => vec![wasm_filter(
            "floor",
            &noop_wasm(),
            &floor_calls("hostcalls"),
        )],
        "noop_trimmed" => vec![wasm_filter("noop_trimmed", &noop_trimmed_wasm(), "")],
        "floor_trimmed" => vec![wasm_filter(
            "floor_trimmed",
            &noop_trimmed_wasm(),
            &floor_calls("hostcalls"),
        )],
        "bare" => vec![wasm_filter("bare", &bare_wasm(), "")],
        "bare_floor" => vec![wasm_filter(
            "bare_floor",
            &bare_wasm(),
            &floor_calls("hostcalls"),
        )],
        // The bare dynamic module making the Envoy calls named after the colon.
        calls if calls.starts_with("bare_native:") => {
            vec![bare_native_filter(&calls["bare_native:".len()..])]
        }
        // BENCH_HOSTCALLS: the no-op making the hostcalls named after the colon.
        calls if calls.starts_with("noop:") => vec![wasm_filter(
            &format!("noop_{}", calls.replace([':', ','], "_")),
            &noop_wasm(),
            &floor_calls(&calls["noop:".len()..]),
        )],
        "lua" => vec![json!({
            "name": "envoy.filters.http.lua",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
                "default_source_code": {"inline_string": lua()}
            }
        })],
        "injector" => vec![json!({
            "name": "envoy.filters.http.credential_injector",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
                "overwrite": true,
                "credential": {
                    "name": "envoy.http.injected_credentials.generic",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                        "credential": {"name": "bench-credential"},
                        "header": "Authorization"
                    }
                }
            }
        })],
        "obo" => vec![wasm_filter(
            "entra_obo",
            &wasm,
            &obo_config(idp, "entra_id", max_entries),
        )],
        "native" => vec![native_filter(
            "entra_obo_native",
            &obo_config(idp, "entra_id", max_entries),
        )],
        "obo_cluster" => {
            let mut config: Value =
                obo_core::json::parse(obo_config(idp, "entra_id", max_entries)).unwrap();
            config["targets"] = json!([{"cluster": "bench_upstream", "scope": API_SCOPE}]);
            vec![wasm_filter("entra_obo_cluster", &wasm, &config.to_string())]
        }
        "obo_shared" => {
            let mut config: Value =
                obo_core::json::parse(obo_config(idp, "entra_id", max_entries)).unwrap();
            config["cache"]["worker_entries"] = json!(0);
            vec![wasm_filter("entra_obo_shared", &wasm, &config.to_string())]
        }
        // Another build of the filter, side by side with this one (BENCH_COMPARE_WASM).
        "obo_compare" => vec![wasm_filter(
            "entra_obo_compare",
            &PathBuf::from(std::env::var("BENCH_COMPARE_WASM").unwrap_or_default()),
            &obo_config(idp, "entra_id", max_entries),
        )],
        "obo_cold" => vec![wasm_filter(
            "entra_obo_cold",
            &wasm,
            &obo_config(idp, "entra_id_slow", max_entries),
        )],
        // Tokens usable for 6 s (expires_in 66, skew 60), refreshed ahead in their last half.
        "obo_refresh" => {
            let mut config: Value =
                obo_core::json::parse(obo_config(idp, "entra_id_slow", max_entries)).unwrap();
            config["cache"]["expiry_skew_s"] = json!(60);
            config["cache"]["refresh_ahead_percent"] = json!(50);
            vec![wasm_filter("entra_obo_refresh", &wasm, &config.to_string())]
        }
        "obo_cold_key" => vec![wasm_filter(
            "entra_obo_cold",
            &wasm,
            &obo_config_with_key(idp, "entra_id_slow", max_entries, None),
        )],
        // Authenticating with an assertion fetched through Envoy: workload identity's token file,
        // served by the shipped recipe's internal listener.
        "obo_cold_fetched" => {
            let mut config: Value =
                obo_core::json::parse(obo_config(idp, "entra_id_slow", max_entries)).unwrap();
            let fields = config.as_object_mut().unwrap();
            fields.remove("client_secret");
            fields.insert(
                "client_assertion_source".into(),
                json!({"cluster": TOKEN_FILE_CLUSTER}),
            );
            vec![wasm_filter("entra_obo_cold", &wasm, &config.to_string())]
        }
        "obo_cold_key_each" => vec![wasm_filter(
            "entra_obo_cold",
            &wasm,
            &obo_config_with_key(idp, "entra_id_slow", max_entries, Some(0)),
        )],
        other => panic!("unknown filter set {other}"),
    }
}

fn listener(name: &str, port: u16, filters: Vec<Value>, route: Value) -> Value {
    // `route`: the whole route entry (a direct_response or a route to a cluster), after
    // BENCH_ROUTES prefix routes that no bench request matches.
    let mut routes: Vec<Value> = (0..obo_e2e::env_or("BENCH_ROUTES", 0))
        .map(|i| json!({"match": {"prefix": format!("/service-{i}/")}, "direct_response": {"status": 404}}))
        .collect();
    routes.push(route);
    let mut http_filters = filters;
    http_filters.push(json!({
        "name": "envoy.filters.http.router",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
    }));
    json!({
        "name": name,
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
                "http_filters": http_filters
            }
        }]}]
    })
}

fn cluster(name: &str, port: u16) -> Value {
    json!({
        "name": name, "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}}}
        ]}]}
    })
}

/// One benchmarked listener.
struct Variant {
    name: &'static str,
    port: u16,
}

struct Bench {
    child: Child,
    admin_port: u16,
    variants: Vec<Variant>,
    _dir: tempfile::TempDir,
}

impl Bench {
    /// A counter of the filter's in Envoy's `/stats` (0 if it has none).
    fn counter(&self, name: &str) -> u64 {
        admin_get(self.admin_port, "/stats")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("wasmcustom.{name}: ")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }

    /// The port of the listener of the variant named `name`.
    fn port_of(&self, name: &str) -> u16 {
        self.variants.iter().find(|v| v.name == name).unwrap().port
    }
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The variants: (name, filter set, proxied?).
const VARIANTS: &[(&str, &str, bool)] = &[
    ("direct: no filter", "none", false),
    ("direct: no-op Wasm", "noop", false),
    ("direct: Lua", "lua", false),
    ("direct: credential_injector", "injector", false),
    ("direct: entra-obo-filter, cache hit", "obo", false),
    SHARED_HIT,
    ("direct: no-op Wasm + the hit's hostcalls", "floor", false),
    ("proxied: no filter", "none", true),
    ("proxied: no-op Wasm", "noop", true),
    ("proxied: Lua", "lua", true),
    ("proxied: entra-obo-filter, cache hit", "obo", true),
    (BY_CLUSTER, "obo_cluster", true),
];

/// The native build's hit, direct and proxied, beside the Wasm build's.
const NATIVE_VARIANTS: &[(&str, &str, bool)] = &[
    (NATIVE_HIT, "native", false),
    (NATIVE_HIT_PROXIED, "native", true),
];
const NATIVE_HIT: &str = "direct: native module, cache hit";
const NATIVE_HIT_PROXIED: &str = "proxied: native module, cache hit";

/// The bare dynamic module, alone and making the native hit's Envoy calls, direct and proxied.
const BARE_NATIVE_VARIANTS: &[(&str, &str, bool)] = &[
    ("direct: bare dynamic module", "bare_native:", false),
    (BARE_NATIVE_FLOOR, "bare_native:hit", false),
    ("proxied: bare dynamic module", "bare_native:", true),
    (BARE_NATIVE_FLOOR_PROXIED, "bare_native:hit", true),
];
const BARE_NATIVE_FLOOR: &str = "direct: bare dynamic module + the native hit's calls";
/// The start of the name of each variant BENCH_NATIVE_CALLS prices.
const BARE_NATIVE_PRICED: &str = "direct: bare dynamic module + ";
const BARE_NATIVE_FLOOR_PROXIED: &str = "proxied: bare dynamic module + the native hit's calls";

/// The hit with a target that names the cluster instead of the host: one hostcall more
/// (`xds.cluster_name`), proxied since a direct response has no cluster.
const BY_CLUSTER: &str = "proxied: entra-obo-filter, cache hit, target by cluster";

/// A cache hit found in the shared cache, not in the worker's own (`cache.worker_entries` 0): what a
/// request costs when its user's token is not in this worker's front cache.
const SHARED_HIT: (&str, &str, bool) = (
    "direct: entra-obo-filter, cache hit in shared data only",
    "obo_shared",
    false,
);

/// The no-op trimmed to entra-obo-filter's exports, making the hit's hostcalls: Envoy calls into
/// both for the same callbacks and both make the same calls, so what is left is the filter's work
/// in the VM.
const TRIMMED_FLOOR: &str = "direct: no-op Wasm, exports trimmed, + the hit's hostcalls";

/// What an application's call to another service carries besides `Host` and `Authorization` as it
/// passes its sidecar (BENCH_SIDECAR_HEADERS=1): trace context, the request id, the usual client
/// headers. About 600 bytes.
const SIDECAR_HEADERS: &[&str] = &[
    "User-Agent: orders-service/4.12.0 (okhttp/4.12.0)",
    "Accept: application/json",
    "Accept-Encoding: gzip",
    "Content-Type: application/json; charset=utf-8",
    "X-Request-Id: 3f2b8c1e-9a4d-4e7b-8f6a-2c1d0e9b8a7f",
    "Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    "Tracestate: congo=t61rcWkgMzE,rojo=00f067aa0ba902b7",
    "X-B3-Traceid: 4bf92f3577b34da6a3ce929d0e0e4736",
    "X-B3-Spanid: 00f067aa0ba902b7",
    "X-B3-Parentspanid: a3ce929d0e0e4736",
    "X-B3-Sampled: 1",
    "Baggage: userId=alice,serverNode=DF%2028,isProduction=false",
    "X-Forwarded-Proto: http",
    "X-Correlation-Id: 7c8d9e0f-1a2b-4c3d-8e9f-0a1b2c3d4e5f",
];

/// The variants whose instructions are counted (the `instructions` part): the hit of each build,
/// the floor of each, and the alternatives.
const COUNTED: &[&str] = &[
    "direct: no filter",
    "direct: credential_injector",
    "direct: Lua",
    "direct: no-op Wasm",
    "direct: entra-obo-filter, cache hit",
    "direct: bare dynamic module",
    BARE_NATIVE_FLOOR,
    NATIVE_HIT,
    "proxied: no filter",
    "proxied: Lua",
    "proxied: entra-obo-filter, cache hit",
    "proxied: bare dynamic module",
    BARE_NATIVE_FLOOR_PROXIED,
    NATIVE_HIT_PROXIED,
];

/// The no-op configurations priced by default (BENCH_HOSTCALLS).
const DEFAULT_HOSTCALLS: &str = "pairs;header;clock;replace;response;pairs,clock,replace";

/// `cold` is the filter set of the cold-path listener (`obo_cold` or `obo_cold_key`).
/// `token_file`: served to the filter as workload identity's (for `obo_cold_fetched`).
fn start_envoy(
    concurrency: u32,
    idp: &MockIdp,
    slow_idp: &MockIdp,
    (cold_port, cold, token_file): (u16, &str, Option<&TokenFile>),
    max_entries: u32,
    callgrind: Option<&Path>,
) -> Bench {
    let direct = json!({"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}});
    let to_upstream = json!({"match": {"prefix": "/"}, "route": {"cluster": "bench_upstream"}});
    let upstream_port = free_port();
    let mut listeners = vec![listener("upstream", upstream_port, vec![], direct.clone())];
    let mut variants = Vec::new();
    let compare = std::env::var_os("BENCH_COMPARE_WASM").map(|_| {
        (
            "direct: entra-obo-filter, cache hit, BENCH_COMPARE_WASM",
            "obo_compare",
            false,
        )
    });
    let native = native_measured()
        .then_some(NATIVE_VARIANTS)
        .into_iter()
        .flatten()
        .copied();
    let bare_native_calls = std::env::var("BENCH_NATIVE_CALLS").unwrap_or_default();
    // Beside the native build, when `make bench` built both.
    let bare_native = bare_native()
        .map(|_| {
            let priced = bare_native_calls
                .split(';')
                .filter(|c| !c.is_empty())
                .map(|c| {
                    // Leaked: a handful of names that live as long as the benchmark.
                    let name: &'static str = format!("{BARE_NATIVE_PRICED}{c}").leak();
                    let filters: &'static str = format!("bare_native:{c}").leak();
                    (name, filters, false)
                });
            BARE_NATIVE_VARIANTS.iter().copied().chain(priced)
        })
        .into_iter()
        .flatten();
    let calls = std::env::var("BENCH_HOSTCALLS").unwrap_or_else(|_| DEFAULT_HOSTCALLS.into());
    let mut hostcalls: Vec<(&'static str, &'static str, bool)> = Vec::new();
    if !calls.is_empty() {
        // Made by `make bench` with binaryen's wasm-metadce; without binaryen there is none.
        if noop_trimmed_wasm().exists() {
            hostcalls.push((
                "direct: no-op Wasm, exports trimmed as entra-obo-filter's",
                "noop_trimmed",
                false,
            ));
            hostcalls.push((TRIMMED_FLOOR, "floor_trimmed", false));
        }
        if bare_wasm().exists() {
            hostcalls.push(("direct: bare Wasm (no SDK, two callbacks)", "bare", false));
            hostcalls.push((BARE_FLOOR, "bare_floor", false));
            hostcalls.push((BARE_FLOOR_PROXIED, "bare_floor", true));
        }
        for c in calls.split(';').filter(|c| !c.is_empty()) {
            // Leaked: a handful of names that live as long as the benchmark.
            let name: &'static str = format!("direct: no-op Wasm + {c}").leak();
            let filters: &'static str = format!("noop:{c}").leak();
            hostcalls.push((name, filters, false));
        }
    }
    for (i, (name, filters, proxied)) in VARIANTS
        .iter()
        .copied()
        .chain(compare)
        .chain(native)
        .chain(bare_native)
        .chain(hostcalls)
        .filter(|(name, _, _)| {
            // BENCH_NATIVE_CALLS's variants are counted too.
            callgrind.is_none() || COUNTED.contains(name) || name.starts_with(BARE_NATIVE_PRICED)
        })
        .enumerate()
    {
        let port = free_port();
        let route = if proxied {
            to_upstream.clone()
        } else {
            direct.clone()
        };
        listeners.push(listener(
            &format!("v{i}"),
            port,
            filters_for(filters, idp, max_entries),
            route,
        ));
        variants.push(Variant { name, port });
    }
    listeners.push(listener(
        "cold",
        cold_port,
        filters_for(cold, slow_idp, max_entries),
        direct,
    ));
    let mut bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        "static_resources": {
            "listeners": listeners,
            "clusters": [
                cluster("bench_upstream", upstream_port),
                cluster("entra_id", idp.port),
                cluster("entra_id_slow", slow_idp.port),
            ],
            "secrets": [{"name": "bench-credential", "generic_secret": {"secret": {"inline_string": static_authorization()}}}]
        }
    });
    if token_file.is_some() {
        token_file_server(LUA_RECIPE, |_| {})(&mut bootstrap);
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bench.json");
    let admin_file = dir.path().join("admin");
    let log_path = dir.path().join("envoy.log");
    std::fs::write(&config, bootstrap.to_string()).unwrap();
    let log = std::fs::File::create(&log_path).expect("envoy's log file");
    let envoy = obo_e2e::envoy::envoy_bin();
    let child = callgrind
        .map_or_else(
            || Command::new(&envoy),
            |dir| callgrind::command(&envoy, dir),
        )
        .arg("-c")
        .arg(&config)
        .args([
            "--use-dynamic-base-id",
            "--concurrency",
            &concurrency.to_string(),
            "-l",
            "warning",
        ])
        .arg("--admin-address-path")
        .arg(&admin_file)
        // The recipe's Lua reads the file this names.
        .envs(token_file.map(|f| ("AZURE_FEDERATED_TOKEN_FILE", f.path.clone())))
        // The native module finds its library here and reads its ${...} from Envoy's own
        // environment (the Wasm filters get theirs through vm_config).
        .envs(native_dir().map(|dir| ("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", dir)))
        .env("AZURE_APP_CLIENT_SECRET", CLIENT_SECRET)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start envoy");
    // From here on, dropping the bench (a panic included) stops this Envoy.
    let mut bench = Bench {
        child,
        admin_port: 0,
        variants,
        _dir: dir,
    };
    // Many listeners, each with its own Wasm VMs and BENCH_ROUTES routes, take a while to load;
    // under callgrind, several times as long.
    let startup = if callgrind.is_some() { 600 } else { 90 };
    let deadline = Instant::now() + Duration::from_secs(startup);
    let give_up = |why: &str, bench: &mut Bench| {
        if let Ok(Some(status)) = bench.child.try_wait() {
            eprintln!("envoy exited with {status}");
        }
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!("{why}; the end of its log:\n{}", tail.join("\n"));
    };
    while bench.admin_port == 0 {
        bench.admin_port = std::fs::read_to_string(&admin_file)
            .ok()
            .and_then(|a| a.trim().rsplit(':').next().and_then(|p| p.parse().ok()))
            .unwrap_or(0);
        if bench.admin_port == 0 {
            if Instant::now() >= deadline || matches!(bench.child.try_wait(), Ok(Some(_))) {
                give_up("envoy did not start", &mut bench);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    while admin_get(bench.admin_port, "/ready").map(|r| r.trim().to_string()) != Some("LIVE".into())
    {
        if Instant::now() >= deadline || matches!(bench.child.try_wait(), Ok(Some(_))) {
            give_up(&format!("envoy not ready within {startup} s"), &mut bench);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bench
}

fn admin_get(port: u16, path: &str) -> Option<String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    agent
        .get(format!("http://127.0.0.1:{port}{path}"))
        .call()
        .ok()?
        .body_mut()
        .read_to_string()
        .ok()
}

fn memory_allocated(admin_port: u16) -> u64 {
    admin_get(admin_port, "/memory")
        .and_then(|m| obo_core::json::parse(&m).ok())
        .and_then(|m| m["allocated"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or(0)
}

struct WrkResult {
    rps: f64,
    /// Requests completed.
    requests: u64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    non_2xx: u64,
}

fn parse_latency(line: &str) -> f64 {
    let v = line.split_whitespace().last().unwrap_or("0");
    let (num, unit) = v.split_at(v.find(|c: char| c.is_alphabetic()).unwrap_or(v.len()));
    let n: f64 = num.parse().unwrap_or(0.0);
    match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        _ => n,
    }
}

/// The one user of the hot-path runs, with a token of `BENCH_TOKEN_BYTES` (default 1,600: Entra
/// ID's are 1.5 to 2.5 KB). Made once: a token made later would differ (its `exp`), and each run
/// would then begin with a cold exchange.
fn bench_user_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| obo_e2e::user_token_of_size("bench-user", token_bytes()))
}

/// The size of the hot path's tokens, the caller's and the one the mock IdP issues for it.
fn token_bytes() -> usize {
    obo_e2e::env_or("BENCH_TOKEN_BYTES", 1600) as usize
}

fn wrk(
    port: u16,
    seconds: u64,
    threads: u32,
    connections: u64,
    script: Option<&Path>,
    env: &[(&str, &Path)],
) -> WrkResult {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--latency",
    ]);
    cmd.args(["-H", "Host: api.example.com"]);
    if std::env::var("BENCH_SIDECAR_HEADERS").is_ok_and(|v| v == "1") {
        for header in SIDECAR_HEADERS {
            cmd.args(["-H", header]);
        }
    }
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    } else {
        cmd.args([
            "-H",
            &format!("Authorization: Bearer {}", bench_user_token()),
        ]);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("wrk (Debian package wrk)");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut r = WrkResult {
        rps: 0.0,
        requests: 0,
        p50_ms: 0.0,
        p99_ms: 0.0,
        max_ms: 0.0,
        non_2xx: 0,
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some((n, _)) = t.split_once(" requests in ") {
            r.requests = n.trim().parse().unwrap_or(0);
        } else if let Some(v) = t.strip_prefix("Requests/sec:") {
            r.rps = v.trim().parse().unwrap_or(0.0);
        } else if t.starts_with("50%") {
            r.p50_ms = parse_latency(t);
        } else if t.starts_with("99%") {
            r.p99_ms = parse_latency(t);
        } else if t.starts_with("Latency") && !t.starts_with("Latency Distribution") {
            // `Latency  avg  stdev  max  +/- stdev`: the slowest request.
            let max = t.split_whitespace().nth(3).unwrap_or("0");
            r.max_ms = parse_latency(max);
        } else if let Some(v) = t.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx = v.trim().parse().unwrap_or(0);
        }
    }
    r
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        0.0
    } else {
        v[v.len() / 2]
    }
}

/// Interleaved rounds over every variant; prints the table and returns it.
fn run_suite(bench: &Bench, concurrency: u32, rounds: u64, seconds: u64, connections: u64) {
    let mut rps: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut p50: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<usize, Vec<f64>> = BTreeMap::new();
    let mut errors = 0;
    for round in 0..rounds {
        // Alternate the order each round, so no variant always runs right after another.
        let mut order: Vec<usize> = (0..bench.variants.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let r = wrk(
                bench.variants[i].port,
                seconds,
                concurrency,
                connections,
                None,
                &[],
            );
            errors += r.non_2xx;
            rps.entry(i).or_default().push(r.rps);
            p50.entry(i).or_default().push(r.p50_ms);
            p99.entry(i).or_default().push(r.p99_ms);
        }
    }
    // Per-round ratios against the reference of each group.
    let ratio = |i: usize, reference: usize| -> f64 {
        median(
            rps[&i]
                .iter()
                .zip(&rps[&reference])
                .map(|(a, b)| a / b)
                .collect(),
        )
    };
    let index = |name: &str| bench.variants.iter().position(|v| v.name == name).unwrap();
    let (none, noop, proxied_none, proxied_noop) = (
        index("direct: no filter"),
        index("direct: no-op Wasm"),
        index("proxied: no filter"),
        index("proxied: no-op Wasm"),
    );
    println!("\n### Envoy `--concurrency {concurrency}`, wrk {concurrency} thread(s), {connections} connections, {rounds} rounds of {seconds} s\n");
    println!(
        "| variant | req/s (median) | × no filter (same group) | × no-op Wasm (same group) | p50 ms | p99 ms |"
    );
    println!("|---|---|---|---|---|---|");
    for (i, v) in bench.variants.iter().enumerate() {
        let proxied = v.name.starts_with("proxied");
        let (reference, reference_noop) = if proxied {
            (proxied_none, proxied_noop)
        } else {
            (none, noop)
        };
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} |",
            v.name,
            median(rps[&i].clone()),
            ratio(i, reference),
            ratio(i, reference_noop),
            median(p50[&i].clone()),
            median(p99[&i].clone())
        );
    }
    let (hit, floor) = (
        index("direct: entra-obo-filter, cache hit"),
        index("direct: no-op Wasm + the hit's hostcalls"),
    );
    println!(
        "\nCache hit × the no-op Wasm filter making the same hostcalls (the floor for them): {:.2}",
        ratio(hit, floor)
    );
    if let Some(trimmed) = bench.variants.iter().position(|v| v.name == TRIMMED_FLOOR) {
        println!(
            "\nCache hit × the same floor with entra-obo-filter's exports (the filter's own work in the VM): {:.2}",
            ratio(hit, trimmed)
        );
    }
    for (floor, hit) in [
        (BARE_FLOOR, "direct: entra-obo-filter, cache hit"),
        (BARE_FLOOR_PROXIED, "proxied: entra-obo-filter, cache hit"),
    ] {
        if let Some(floor_i) = bench.variants.iter().position(|v| v.name == floor) {
            println!("\n{hit} × {floor}: {:.2}", ratio(index(hit), floor_i));
        }
    }
    println!(
        "\nCache hit, target by cluster × by host (proxied): {:.2}",
        ratio(
            index(BY_CLUSTER),
            index("proxied: entra-obo-filter, cache hit")
        )
    );
    if let Some(compare) = bench
        .variants
        .iter()
        .position(|v| v.name.ends_with("BENCH_COMPARE_WASM"))
    {
        println!(
            "\nCache hit × the same with BENCH_COMPARE_WASM: {:.2}",
            ratio(hit, compare)
        );
    }
    let position = |name: &str| bench.variants.iter().position(|v| v.name == name);
    if let (Some(native), Some(native_proxied)) =
        (position(NATIVE_HIT), position(NATIVE_HIT_PROXIED))
    {
        let wasm_proxied = index("proxied: entra-obo-filter, cache hit");
        let (lua, lua_proxied) = (index("direct: Lua"), index("proxied: Lua"));
        println!(
            "\nNative cache hit × no filter: {:.2} direct, {:.2} proxied; × the Wasm hit: {:.2} / {:.2}; × Lua: {:.2} / {:.2}",
            ratio(native, none),
            ratio(native_proxied, proxied_none),
            ratio(native, hit),
            ratio(native_proxied, wasm_proxied),
            ratio(native, lua),
            ratio(native_proxied, lua_proxied)
        );
        if let (Some(floor), Some(floor_proxied)) = (
            position(BARE_NATIVE_FLOOR),
            position(BARE_NATIVE_FLOOR_PROXIED),
        ) {
            println!(
                "\nNative cache hit × the bare dynamic module making the same calls: {:.2} direct, {:.2} proxied",
                ratio(native, floor),
                ratio(native_proxied, floor_proxied)
            );
        }
    }
    if errors > 0 {
        println!("\n(non-2xx answers during the suite: {errors})");
    }
}

fn write_tokens(dir: &Path, users: usize, prefix: &str, token: fn(&str) -> String) -> PathBuf {
    let path = dir.join(format!("{prefix}-tokens"));
    let tokens: Vec<String> = (0..users)
        .map(|i| token(&format!("{prefix}-{i}")))
        .collect();
    std::fs::write(&path, tokens.join("\n")).unwrap();
    path
}

/// Sends one request for each of the users `from..to` (each a new exchange).
fn fill(port: u16, from: usize, to: usize) {
    let tokens = (from..to)
        .map(|i| obo_e2e::user_token(&format!("mem-{i}")))
        .collect();
    request_each(port, tokens);
}

/// Sends one request with each token, from 16 threads: each token is then cached.
fn request_each(port: u16, tokens: Vec<String>) {
    let tokens = std::sync::Arc::new(tokens);
    let threads: Vec<_> = (0..16)
        .map(|t| {
            let tokens = tokens.clone();
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                for token in tokens.iter().skip(t).step_by(16) {
                    let _ = agent
                        .get(format!("http://127.0.0.1:{port}/"))
                        .header("host", "api.example.com")
                        .header("authorization", format!("Bearer {token}"))
                        .call();
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Cache hits spread over many users (`--concurrency 1`, every token already cached): each request
/// from the next user in turn, as many users as the worker's front cache holds (1024 by default)
/// and more. Within one user count every request is a front-cache hit after the first round;
/// beyond it, some find their token only in shared data. Compared with one user sent the same way.
fn many_users(bench: &Bench, scratch: &Path, rounds: u64, seconds: u64, connections: u64) {
    let hit = bench.port_of("direct: entra-obo-filter, cache hit");
    let script = bench_dir().join("sequential_users.lua");
    let counts = [1usize, 500, 4_000];
    let files: Vec<PathBuf> = counts
        .iter()
        .map(|&n| {
            let file = write_tokens(scratch, n, &format!("users-{n}"), |user| {
                obo_e2e::user_token_of_size(user, token_bytes())
            });
            let tokens = std::fs::read_to_string(&file).unwrap();
            request_each(hit, tokens.lines().map(str::to_string).collect());
            file
        })
        .collect();
    let mut rps: Vec<Vec<f64>> = vec![Vec::new(); counts.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..counts.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let r = wrk(
                hit,
                seconds,
                1,
                connections,
                Some(&script),
                &[("BENCH_TOKENS", &files[i])],
            );
            rps[i].push(r.rps);
        }
    }
    let per_user: Vec<String> = counts
        .iter()
        .enumerate()
        .skip(1)
        .map(|(i, n)| {
            let ratio = median(rps[i].iter().zip(&rps[0]).map(|(a, b)| a / b).collect());
            format!("{n} users {:.0} req/s, {ratio:.2}x", median(rps[i].clone()))
        })
        .collect();
    println!(
        "\nCache hits over many users (`--concurrency 1`, {connections} connections, {rounds} rounds of {seconds} s, every token cached, `cache.worker_entries` 1024, each request from the next user in turn): one user {:.0} req/s; {}.",
        median(rps[0].clone()),
        per_user.join("; ")
    );
}

/// Envoy's instructions per request on its one worker, each variant on one keep-alive connection,
/// counted by callgrind: what each costs, free of the machine's noise.
fn instructions(idp: &MockIdp, slow_idp: &MockIdp, seconds: u64) {
    if !callgrind::available() {
        println!(
            "\nInstructions per request: not counted (needs valgrind: apt-get install valgrind)."
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cold_port = free_port();
    let bench = start_envoy(
        1,
        idp,
        slow_idp,
        (cold_port, "obo_cold", None),
        200_000,
        Some(dir.path()),
    );
    let pid = bench.child.id();
    let mut counted = Vec::new();
    for v in &bench.variants {
        // The first request exchanges the token; a few more, and every cache is warm.
        let _ = wrk(v.port, 2, 1, 1, None, &[]);
        let mut requests = 0;
        let instructions = callgrind::count(pid, dir.path(), || {
            requests = wrk(v.port, seconds, 1, 1, None, &[]).requests;
        });
        counted.push((v.name, instructions / requests.max(1), requests));
    }
    let of = |name: &str| {
        counted
            .iter()
            .find(|(n, _, _)| *n == name)
            .map_or(0, |(_, per, _)| *per)
    };
    println!(
        "\n### Instructions per request (callgrind, Envoy's worker, `--concurrency 1`, one connection)\n"
    );
    println!("| variant | instructions | × no filter | more than no filter | requests counted |");
    println!("|---|---|---|---|---|");
    for (name, per, requests) in &counted {
        let none = of(if name.starts_with("proxied") {
            "proxied: no filter"
        } else {
            "direct: no filter"
        });
        println!(
            "| {name} | {per} | {:.3} | {} | {requests} |",
            none as f64 / (*per).max(1) as f64,
            *per as i64 - none as i64
        );
    }
    let (native, floor) = (of(NATIVE_HIT), of(BARE_NATIVE_FLOOR));
    let (native_p, floor_p) = (of(NATIVE_HIT_PROXIED), of(BARE_NATIVE_FLOOR_PROXIED));
    if native > 0 && floor > 0 {
        println!(
            "\nNative hit × the bare dynamic module making the same calls, in instructions: {:.3} direct, {:.3} proxied; its own work: {} and {} instructions.",
            floor as f64 / native as f64,
            floor_p as f64 / native_p.max(1) as f64,
            native as i64 - floor as i64,
            native_p as i64 - floor_p as i64
        );
    }
}

/// Refresh ahead under load: one user's requests across many expiries of short-lived tokens (usable
/// 6 s, refreshed in their last half, the IdP answering in 300 ms), side by side with the same load
/// on a token that stays warm. A request that waited for an exchange would take 300 ms or more.
fn refresh_ahead(idp: &MockIdp, rounds: u64, seconds: u64, connections: u64) {
    let refresh_idp = MockIdp::start();
    refresh_idp.set(Behaviour::Delay(
        Duration::from_millis(300),
        Box::new(Behaviour::Issue {
            expires_in: json!(66),
        }),
    ));
    let refresh_port = free_port();
    let bench = start_envoy(
        1,
        idp,
        &refresh_idp,
        (refresh_port, "obo_refresh", None),
        200_000,
        None,
    );
    let hit = bench.port_of("direct: entra-obo-filter, cache hit");
    let _ = wrk(hit, 1, 1, 1, None, &[]);
    let seconds = (seconds * 2).max(6);
    let (mut warm, mut refreshing) = (Vec::new(), Vec::new());
    let mut exchanges = 0;
    for round in 0..rounds.min(3) {
        let order = if round % 2 == 0 {
            [(hit, true), (refresh_port, false)]
        } else {
            [(refresh_port, false), (hit, true)]
        };
        for (port, is_warm) in order {
            if is_warm {
                warm.push(wrk(port, seconds, 1, connections, None, &[]));
            } else {
                // The token expired while the other listener ran: one request takes a new one
                // (a cold exchange, not part of the measure) before the measured run.
                let _ = wrk(port, 1, 1, 1, None, &[]);
                let before = refresh_idp.count();
                refreshing.push(wrk(port, seconds, 1, connections, None, &[]));
                exchanges += refresh_idp.count() - before;
            }
        }
    }
    let summary = |runs: &[WrkResult]| {
        format!(
            "p50 {:.2} ms, p99 {:.2} ms, slowest {:.1} ms, {:.0} req/s, {} non-2xx",
            median(runs.iter().map(|r| r.p50_ms).collect()),
            median(runs.iter().map(|r| r.p99_ms).collect()),
            runs.iter().map(|r| r.max_ms).fold(0.0, f64::max),
            median(runs.iter().map(|r| r.rps).collect()),
            runs.iter().map(|r| r.non_2xx).sum::<u64>()
        )
    };
    println!(
        "\nRefresh ahead (`--concurrency 1`, {connections} connections, one user, {} runs of {seconds} s each, interleaved): tokens usable for 6 s and refreshed in their last half, the IdP answering in 300 ms: {}; {exchanges} token requests ({:.1} s apart). The same load on a warm token: {}.",
        refreshing.len(),
        summary(&refreshing),
        (refreshing.len() as u64 * seconds) as f64 / exchanges.max(1) as f64,
        summary(&warm)
    );
}

fn main() {
    let rounds = obo_e2e::env_or("BENCH_ROUNDS", 5);
    let seconds = obo_e2e::env_or("BENCH_SECONDS", 4);
    let connections = obo_e2e::env_or("BENCH_CONNECTIONS", 16);
    let scratch = tempfile::tempdir().unwrap();
    let sequential = bench_dir().join("sequential_users.lua");

    let wasm_size = std::fs::metadata(obo_e2e::envoy::wasm_path())
        .map(|m| m.len())
        .unwrap_or(0);
    println!("## Results\n");
    println!(
        "`.wasm` size: {wasm_size} bytes ({:.0} KiB); no-op Wasm filter: {} bytes.",
        wasm_size as f64 / 1024.0,
        std::fs::metadata(noop_wasm()).map(|m| m.len()).unwrap_or(0)
    );

    let parts = std::env::var("BENCH_PARTS")
        .unwrap_or_else(|_| "hot,instructions,cold,users,refresh,memory".into());
    let concurrencies: Vec<u32> = std::env::var("BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "1,2".into())
        .split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect();
    let idp = MockIdp::start();
    idp.set(Behaviour::IssueSized(token_bytes()));
    let slow_idp = MockIdp::start();
    slow_idp.set(Behaviour::Delay(
        Duration::from_millis(20),
        Box::new(Behaviour::issue()),
    ));
    // The timed Envoy, started only for the parts that use it.
    let timed = ["hot", "users", "cold"].iter().any(|p| parts.contains(p));
    for &concurrency in concurrencies.iter().filter(|_| timed) {
        let cold_port = free_port();
        let bench = start_envoy(
            concurrency,
            &idp,
            &slow_idp,
            (cold_port, "obo_cold", None),
            200_000,
            None,
        );
        // Warm the cache of the bench user on every worker's view (shared data: once is enough).
        for v in &bench.variants {
            let _ = wrk(v.port, 1, 1, 1, None, &[]);
        }
        if parts.contains("hot") {
            run_suite(&bench, concurrency, rounds, seconds, connections);
        }
        if concurrency == 1 && parts.contains("users") {
            many_users(&bench, scratch.path(), rounds, seconds, connections);
        }
        if concurrency == 1 && parts.contains("cold") {
            // Cold path: every request a new user, the IdP answering after 20 ms.
            let users = 200_000;
            let tokens = write_tokens(scratch.path(), users, "cold", obo_e2e::user_token);
            let before = slow_idp.count();
            let r = wrk(
                cold_port,
                seconds * 2,
                1,
                64,
                Some(&sequential),
                &[("BENCH_TOKENS", &tokens)],
            );
            let exchanges = slow_idp.count() - before;
            println!(
                "\nCold path (`--concurrency 1`, every request a new user, IdP answering in 20 ms, 64 connections): {:.0} exchanges/s, p50 {:.1} ms, p99 {:.1} ms, {} non-2xx.",
                exchanges as f64 / (seconds * 2) as f64,
                r.p50_ms,
                r.p99_ms,
                r.non_2xx
            );
            // The same with private_key_jwt (RS256 assertions signed in the VM): one assertion
            // sent again for `reuse_s` (the default), then a new one for every token request.
            for (kind, how) in [
                (
                    "obo_cold_key",
                    "one assertion sent again for `reuse_s`, the default",
                ),
                (
                    "obo_cold_key_each",
                    "a new assertion per token request, `reuse_s` 0",
                ),
            ] {
                let key_idp = MockIdp::start();
                key_idp.set(Behaviour::Delay(
                    Duration::from_millis(20),
                    Box::new(Behaviour::issue()),
                ));
                key_idp.expect_private_key(
                    obo_e2e::client_key::client_key().public.clone(),
                    &key_idp.endpoint(),
                );
                let key_port = free_port();
                let key_bench =
                    start_envoy(1, &idp, &key_idp, (key_port, kind, None), 200_000, None);
                let tokens = write_tokens(scratch.path(), users, kind, obo_e2e::user_token);
                let r = wrk(
                    key_port,
                    seconds * 2,
                    1,
                    64,
                    Some(&sequential),
                    &[("BENCH_TOKENS", &tokens)],
                );
                let exchanges = key_idp.count();
                println!(
                    "Cold path with `private_key_jwt`, {how}, same load: {:.0} exchanges/s, p50 {:.1} ms, p99 {:.1} ms, {} non-2xx, {} refused by the mock.",
                    exchanges as f64 / (seconds * 2) as f64,
                    r.p50_ms,
                    r.p99_ms,
                    r.non_2xx,
                    key_idp.violations().len()
                );
                drop(key_bench);
            }
            // The same with a client assertion fetched through Envoy (workload identity's token
            // file on the recipe's internal listener): fetched once, then held.
            let file = TokenFile::with(&federated_token(1, obo_e2e::now() + 3_600));
            let fetched_idp = MockIdp::start();
            fetched_idp.set(Behaviour::Delay(
                Duration::from_millis(20),
                Box::new(Behaviour::issue()),
            ));
            fetched_idp.expect_federated(file.current());
            let fetched_port = free_port();
            let kind = "obo_cold_fetched";
            let fetched_bench = start_envoy(
                1,
                &idp,
                &fetched_idp,
                (fetched_port, kind, Some(&file)),
                200_000,
                None,
            );
            let tokens = write_tokens(scratch.path(), users, kind, obo_e2e::user_token);
            let r = wrk(
                fetched_port,
                seconds * 2,
                1,
                64,
                Some(&sequential),
                &[("BENCH_TOKENS", &tokens)],
            );
            println!(
                "Cold path with a client assertion fetched through Envoy (workload identity's token file), same load: {:.0} exchanges/s, p50 {:.1} ms, p99 {:.1} ms, {} non-2xx, {} refused by the mock, {} fetches.",
                fetched_idp.count() as f64 / (seconds * 2) as f64,
                r.p50_ms,
                r.p99_ms,
                r.non_2xx,
                fetched_idp.violations().len(),
                fetched_bench.counter("obo_client_assertion_fetches")
            );
            drop(fetched_bench);
        }
    }

    if parts.contains("instructions") {
        instructions(&idp, &slow_idp, seconds);
    }
    if parts.contains("refresh") {
        refresh_ahead(&idp, rounds, seconds, connections);
    }
    if !parts.contains("memory") {
        return;
    }
    // Memory of the cache: a fresh Envoy, 1.5 KB tokens, 10,000 then 100,000 users.
    let big_idp = MockIdp::start();
    big_idp.set(Behaviour::IssueSized(1500));
    let cold_port = free_port();
    let bench = start_envoy(
        1,
        &big_idp,
        &big_idp,
        (cold_port, "obo_cold", None),
        200_000,
        None,
    );
    std::thread::sleep(Duration::from_secs(1));
    let base = memory_allocated(bench.admin_port);
    let mut line = String::from("\nMemory (Envoy admin `/memory`, allocated, 1.5 KB tokens):");
    let mut filled = 0usize;
    for target in [10_000usize, 100_000] {
        fill(cold_port, filled, target);
        filled = target;
        std::thread::sleep(Duration::from_secs(1));
        let now = memory_allocated(bench.admin_port);
        line.push_str(&format!(
            " {target} tokens: +{:.1} MiB ({:.0} bytes a token);",
            (now.saturating_sub(base)) as f64 / 1048576.0,
            now.saturating_sub(base) as f64 / target as f64
        ));
    }
    println!(
        "{}; token requests sent to fill it: {}.",
        line.trim_end_matches(';'),
        big_idp.count()
    );
}
