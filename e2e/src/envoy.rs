//! The real Envoy, with the real `.wasm` or the native module, on free loopback ports. Built by
//! `make test`: `ENVOY_BIN` points at the binary, `OBO_WASM` and `OBO_NATIVE` at the two builds.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// A change to Envoy's bootstrap, made just before it starts.
pub type BootstrapPatch = Box<dyn FnOnce(&mut Value)>;

/// Which build of the filter Envoy runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Build {
    /// `entra_obo_filter.wasm` in Envoy's Wasm filter.
    Wasm,
    /// `libentra_obo_native.so` as a dynamic module HTTP filter (Envoy 1.38 and later).
    Native,
}

impl Build {
    /// The build the suite runs against: `OBO_BUILD=native` for the native module (`make
    /// e2e-native`), else the Wasm build. A run-wide choice, like the Envoy version (`ENVOY_BIN`):
    /// the same tests run once per build, each on the Envoy versions that build supports.
    pub fn under_test() -> Build {
        match std::env::var("OBO_BUILD").as_deref() {
            Ok("native") => Build::Native,
            Ok("wasm") | Err(_) => Build::Wasm,
            Ok(other) => panic!("OBO_BUILD is {other:?}: wasm or native"),
        }
    }

    /// The command that runs this build locally (`src/bin/local_stack.rs`), as its messages say.
    pub fn make_run(self) -> &'static str {
        match self {
            Build::Wasm => "make run",
            Build::Native => "make run-native",
        }
    }

    /// The filter's name in Envoy's filter chain (a route's `typed_per_filter_config` key).
    pub fn filter_name(self) -> &'static str {
        match self {
            Build::Wasm => "envoy.filters.http.wasm",
            Build::Native => NATIVE_FILTER_NAME,
        }
    }

    /// What Envoy puts before the filter's metric names in `/stats/prometheus`: nothing for the
    /// Wasm build (Envoy strips its `wasmcustom` namespace), `envoy_dynamicmodulescustom_` for the
    /// native one (docs/metrics.md).
    pub fn prometheus_prefix(self) -> &'static str {
        match self {
            Build::Wasm => "",
            Build::Native => "envoy_dynamicmodulescustom_",
        }
    }
}

const NATIVE_FILTER_NAME: &str = "entra_obo";

pub struct EnvoyOptions {
    /// The plugin configuration, as the JSON text Envoy hands the filter.
    pub plugin_config: String,
    pub build: Build,
    /// The Envoy binary, when not `ENVOY_BIN`'s.
    pub envoy_bin: Option<PathBuf>,
    /// Environment variables made visible to the filter: the Wasm VM's, or (native build) Envoy's
    /// own process environment, which the native module reads.
    pub vm_env: Vec<(String, String)>,
    /// Environment variables of Envoy's own process (what its Lua filters read).
    pub process_env: Vec<(String, String)>,
    pub concurrency: u32,
    /// The token cluster's port on 127.0.0.1 (None: a cluster with no endpoint).
    pub idp_port: Option<u16>,
    pub upstream_port: u16,
    /// Envoy's log level for the filter's component (`wasm` or `dynamic_modules`).
    pub wasm_log_level: &'static str,
    /// A last change to the bootstrap before Envoy starts (extra listeners and clusters).
    pub bootstrap_patch: Option<BootstrapPatch>,
}

impl EnvoyOptions {
    pub fn new(plugin_config: &Value, idp_port: u16, upstream_port: u16) -> Self {
        EnvoyOptions {
            plugin_config: plugin_config.to_string(),
            build: Build::under_test(),
            envoy_bin: None,
            vm_env: Vec::new(),
            process_env: Vec::new(),
            concurrency: 2,
            idp_port: Some(idp_port),
            upstream_port,
            wasm_log_level: "debug",
            bootstrap_patch: None,
        }
    }
}

pub struct Envoy {
    child: Child,
    pub port: u16,
    pub admin_port: u16,
    log_path: PathBuf,
    _dir: tempfile::TempDir,
}

fn env_path(var: &str, default: &str) -> PathBuf {
    let path = std::env::var(var).map_or_else(
        |_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).join(default),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "{} not found ({var}); run the suite with `make test`, which builds and installs it",
        path.display()
    );
    path
}

pub fn envoy_bin() -> PathBuf {
    env_path("ENVOY_BIN", ".tools/envoy-1.40.0/envoy/_bin/envoy")
}

pub fn wasm_path() -> PathBuf {
    env_path("OBO_WASM", "target/entra_obo_filter.wasm")
}

/// The native module where it is built and this Envoy can load it (`make native`; 1.38 and later).
pub fn native_path_if_built() -> Option<PathBuf> {
    let path = std::env::var("OBO_NATIVE").map_or_else(
        |_| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../target/native/libentra_obo_native.so"
            ))
        },
        PathBuf::from,
    );
    let version = envoy_version(&envoy_bin());
    (path.exists() && native_supports(&version)).then_some(path)
}

/// The native module (`make native`).
pub fn native_path() -> PathBuf {
    env_path("OBO_NATIVE", "target/native/libentra_obo_native.so")
}

/// Envoy `version` as `make tools` installs it into `.tools/`.
pub fn envoy_bin_of(version: &str) -> PathBuf {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .join(format!(".tools/envoy-{version}/envoy/_bin/envoy"));
    assert!(
        path.exists(),
        "{} not found; `make tools` installs it",
        path.display()
    );
    path
}

/// The Envoy versions the native build supports: 1.38 to 1.40 (native/src/abi.rs says why).
pub fn native_supports(version: &str) -> bool {
    let minor = version
        .strip_prefix("1.")
        .and_then(|rest| rest.split('.').next());
    minor
        .and_then(|m| m.parse::<u32>().ok())
        .is_some_and(|m| (38..=40).contains(&m))
}

/// The version `envoy --version` prints (`1.40.0`), or an empty string.
pub fn envoy_version(bin: &std::path::Path) -> String {
    let out = Command::new(bin).arg("--version").output();
    let text = out.map_or_else(
        |_| String::new(),
        |o| String::from_utf8_lossy(&o.stdout).into_owned(),
    );
    // "<path>  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
    let build = text.rsplit("version: ").next().unwrap_or_default();
    build.split('/').nth(1).unwrap_or_default().to_string()
}

pub fn cluster(name: &str, port: Option<u16>) -> Value {
    let endpoints = port.map_or_else(Vec::new, |p| {
        vec![json!({"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": p}}}})]
    });
    json!({
        "name": name,
        "type": "STATIC",
        // Generous: with 200 connections opened at once on two loaded cores, 1 s was seen to
        // expire now and then before Envoy's event loop saw the loopback connect complete.
        "connect_timeout": "5s",
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": endpoints}]}
    })
}

/// The filter's entry in the HTTP filter chain.
fn filter(opts: &EnvoyOptions, module: &std::path::Path) -> Value {
    let configuration = json!({
        "@type": "type.googleapis.com/google.protobuf.StringValue",
        "value": opts.plugin_config
    });
    if opts.build == Build::Native {
        // Envoy looks for lib<name>.so in ENVOY_DYNAMIC_MODULES_SEARCH_PATH (set in try_start).
        return json!({
            "name": NATIVE_FILTER_NAME,
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
                "dynamic_module_config": {"name": "entra_obo_native", "do_not_close": true},
                "filter_name": "entra_obo",
                "filter_config": configuration
            }
        });
    }
    let key_values: serde_json::Map<String, Value> = opts
        .vm_env
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                // No name or root_id (the module needs neither): Envoy prefixes the filter's log
                // lines with the vm_id alone.
                "failure_policy": "FAIL_CLOSED",
                "vm_config": {
                    "vm_id": "entra_obo",
                    "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": module}},
                    "environment_variables": {"key_values": key_values}
                },
                "configuration": configuration
            }
        }
    })
}

fn bootstrap(opts: &EnvoyOptions, module: &std::path::Path) -> Value {
    json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}}},
        // Histograms reach the admin endpoint at each flush; 5 s by default.
        "stats_flush_interval": "0.5s",
        "static_resources": {
            "listeners": [{
                "name": "egress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": 0}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "egress",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "upstream"}}]
                        }]},
                        "http_filters": [
                            filter(opts, module),
                            {"name": "envoy.filters.http.router",
                             "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}
                        ]
                    }
                }]}]
            }],
            "clusters": [cluster("upstream", Some(opts.upstream_port)), cluster("entra_id", opts.idp_port)]
        }
    })
}

impl Envoy {
    /// Starts Envoy and waits until its listener is up; panics with Envoy's log if it is not.
    pub fn start(opts: EnvoyOptions) -> Envoy {
        Envoy::try_start(opts).unwrap_or_else(|log| panic!("envoy did not start:\n{log}"))
    }

    /// Starts Envoy; Err carries Envoy's log when it exits or never becomes ready.
    pub fn try_start(mut opts: EnvoyOptions) -> Result<Envoy, String> {
        let bin = opts.envoy_bin.clone().unwrap_or_else(envoy_bin);
        let module = match opts.build {
            Build::Wasm => wasm_path(),
            Build::Native => native_path(),
        };
        let mut env = opts.process_env.clone();
        if opts.build == Build::Native {
            let dir = module.parent().map(|d| d.to_string_lossy().into_owned());
            env.push((
                "ENVOY_DYNAMIC_MODULES_SEARCH_PATH".into(),
                dir.unwrap_or_default(),
            ));
            env.extend(opts.vm_env.iter().cloned());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let config_path = dir.path().join("envoy.json");
        let admin_path = dir.path().join("admin-address");
        let log_path = dir.path().join("envoy.log");
        let mut config = bootstrap(&opts, &module);
        if let Some(patch) = opts.bootstrap_patch.take() {
            patch(&mut config);
        }
        std::fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
        let log_file = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
        let child = Command::new(bin)
            .arg("-c")
            .arg(&config_path)
            .arg("--use-dynamic-base-id")
            .arg("--concurrency")
            .arg(opts.concurrency.to_string())
            .arg("--admin-address-path")
            .arg(&admin_path)
            .args(["-l", "info", "--component-log-level"])
            .arg(format!("wasm:{0},dynamic_modules:{0}", opts.wasm_log_level))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot start envoy: {e}"))?;
        let mut envoy = Envoy {
            child,
            port: 0,
            admin_port: 0,
            log_path,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = envoy.child.try_wait() {
                return Err(format!("envoy exited with {status}:\n{}", envoy.log()));
            }
            if envoy.admin_port == 0 {
                if let Ok(addr) = std::fs::read_to_string(&admin_path) {
                    envoy.admin_port = addr
                        .trim()
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0);
                }
            }
            if envoy.admin_port != 0 && envoy.port == 0 {
                envoy.port = envoy.listener_port().unwrap_or(0);
            }
            if envoy.port != 0 && envoy.admin("/ready").is_some_and(|r| r.trim() == "LIVE") {
                return Ok(envoy);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("envoy not ready after 30 s:\n{}", envoy.log()))
    }

    /// GET on the admin interface.
    pub fn admin(&self, path: &str) -> Option<String> {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        agent
            .get(format!("http://127.0.0.1:{}{path}", self.admin_port))
            .call()
            .ok()?
            .body_mut()
            .read_to_string()
            .ok()
    }

    /// The filter's counters in `/stats`, by name without Envoy's prefix (`wasmcustom.`, or the
    /// native build's `dynamicmodulescustom.`), sorted.
    pub fn obo_counters(&self) -> Vec<(String, u64)> {
        let text = self.admin("/stats?filter=obo_").unwrap_or_default();
        let mut out: Vec<(String, u64)> = text
            .lines()
            .filter_map(|l| {
                let (name, value) = l.split_once(": ")?;
                Some((
                    name.trim_start_matches("wasmcustom.")
                        .trim_start_matches("dynamicmodulescustom.")
                        .to_string(),
                    value.trim().parse().ok()?,
                ))
            })
            .collect();
        out.sort();
        out
    }

    /// One of the filter's counters once it reads `expected` (each worker hands its counts to
    /// Envoy on its root context's tick, every second), or after ten seconds whatever it reads.
    pub fn obo_counter_once(&self, name: &str, expected: u64) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let count = self
                .obo_counters()
                .into_iter()
                .find(|(n, _)| n == name)
                .map_or(0, |(_, v)| v);
            if count == expected || std::time::Instant::now() > deadline {
                return count;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn listener_port(&self) -> Option<u16> {
        let listeners: Value =
            obo_core::json::parse(&self.admin("/listeners?format=json")?).ok()?;
        listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
            .as_u64()
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p != 0)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The lines the filter itself logged (either build).
    pub fn filter_log_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains("wasm log") || is_native_filter_line(l))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A line of Envoy's log written by the native module (its `dynamic_modules` logger), not by
/// Envoy's loader about it.
pub fn is_native_filter_line(line: &str) -> bool {
    line.contains("][dynamic_modules] ") && !line.contains("Dynamic module ABI version")
}
