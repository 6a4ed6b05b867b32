//! `make run`: Envoy with the filter, in front of an echo API, on loopback.
//!
//! Without the AZURE_* variables it also starts a mock Entra ID token endpoint and uses
//! `envoy/envoy.yaml`. With AZURE_APP_CLIENT_ID, AZURE_APP_CLIENT_SECRET and
//! AZURE_OPENID_CONFIG_TOKEN_ENDPOINT set, it uses that real tenant through
//! `envoy/envoy-tenant.yaml` (docs/tenant.md). With WORKLOAD_IDENTITY=1 it uses
//! `envoy/envoy-workload-identity.yaml` and no secret at all: the filter authenticates with a token
//! file the program rewrites every TOKEN_ROTATION_S seconds (20 by default), served by Envoy's
//! internal listener, and the mock trusts only the file's current token. With OBO_BUILD=native
//! (`make run-native`) it loads the native module through `envoy/envoy-native.yaml` (mock only).
//! The ports are those of the file unless PORT, ADMIN_PORT, ECHO_PORT or IDP_PORT say otherwise. It says "ready" only once Envoy answers, exits
//! non-zero with one line when a part cannot start, and Ctrl-C stops everything.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use obo_e2e::envoy::Build;
use obo_e2e::mock_idp::{MockIdp, CLIENT_ID, CLIENT_SECRET};
use obo_e2e::upstream::Upstream;
use obo_e2e::workload_identity::federated_token;
use serde_json::Value;

/// How long each token the demo writes into the token file lives: longer than the filter's
/// margins (30 s before exp, plus the token request's timeout).
const FEDERATED_TOKEN_LIFETIME_S: u64 = 60;

const TENANT_VARS: [&str; 3] = [
    "AZURE_APP_CLIENT_ID",
    "AZURE_APP_CLIENT_SECRET",
    "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT",
];

/// Where everything listens, on 127.0.0.1.
struct Ports {
    listener: u16,
    admin: u16,
    echo: u16,
    idp: u16,
}

impl Ports {
    fn from_env() -> Result<Ports, String> {
        let port = |name: &str, default: u16| match std::env::var(name) {
            Err(_) => Ok(default),
            Ok(v) if v.is_empty() => Ok(default),
            Ok(v) => v
                .parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| format!("{name}={v} is not a port (1 to 65535)")),
        };
        Ok(Ports {
            listener: port("PORT", 10_000)?,
            admin: port("ADMIN_PORT", 9_901)?,
            echo: port("ECHO_PORT", 18_081)?,
            idp: port("IDP_PORT", 18_080)?,
        })
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => code,
        Err(why) => {
            eprintln!("{}: {why}", make_target());
            ExitCode::FAILURE
        }
    }
}

/// OBO_BUILD=native (`make run-native`): the native module instead of the .wasm.
fn is_native() -> bool {
    std::env::var("OBO_BUILD").is_ok_and(|b| b == "native")
}

/// The command that started this program, as its messages name it.
fn make_target() -> &'static str {
    match is_native() {
        true => Build::Native.make_run(),
        false => Build::Wasm.make_run(),
    }
}

fn run() -> Result<ExitCode, String> {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let ports = Ports::from_env()?;
    let make = make_target();
    let envoy_bin = std::env::var("ENVOY_BIN")
        .map_err(|_| format!("ENVOY_BIN is not set: start it with `{make}`"))?;
    let native = is_native();
    let filter = match native {
        true => "target/native/libentra_obo_native.so",
        false => "target/entra_obo_filter.wasm",
    };
    if !Path::new(&envoy_bin).exists() || !root.join(filter).exists() {
        return Err(format!(
            "Envoy or {filter} is missing: start it with `{make}`, which builds both"
        ));
    }
    let tenant = TENANT_VARS
        .iter()
        .all(|v| std::env::var(v).is_ok_and(|x| !x.is_empty()));
    let workload_identity =
        std::env::var("WORKLOAD_IDENTITY").is_ok_and(|v| !v.is_empty() && v != "0");
    if native && (tenant || workload_identity) {
        return Err(
            "it runs the mock token endpoint only: unset the AZURE_* variables and WORKLOAD_IDENTITY, or use `make run`"
                .into(),
        );
    }
    let _echo = Upstream::try_start_on(ports.echo)
        .map_err(|e| format!("the echo API {e}; set ECHO_PORT to a free port"))?;
    let mut envoy = Command::new(envoy_bin);
    envoy.current_dir(root);
    // In the build folder, rewritten by each run: nothing is left in /tmp when it is killed.
    // RUN_DIR: another folder (the suite gives each run its own).
    let dir = std::env::var_os("RUN_DIR").map_or_else(|| root.join("target/make-run"), Into::into);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (_idp, file) = if workload_identity {
        let token_file = dir.join("azure-identity-token");
        let every = Duration::from_secs(obo_e2e::env_or("TOKEN_ROTATION_S", 20).max(1));
        rotate_token_file(&token_file, every)?;
        let idp = MockIdp::try_start_on(ports.idp)
            .map_err(|e| format!("the mock Entra ID {e}; set IDP_PORT to a free port"))?;
        let trusted = token_file.clone();
        idp.expect_federated(Arc::new(move || std::fs::read_to_string(&trusted).ok()));
        envoy
            .env("AZURE_FEDERATED_TOKEN_FILE", &token_file)
            .env("AZURE_CLIENT_ID", CLIENT_ID)
            .env("AZURE_TENANT_ID", "test-tenant")
            .env(
                "AZURE_AUTHORITY_HOST",
                format!("http://127.0.0.1:{}/", ports.idp),
            )
            .env_remove("AZURE_APP_CLIENT_SECRET")
            .env_remove("AZURE_APP_JWK");
        (Some(idp), "envoy/envoy-workload-identity.yaml")
    } else if tenant {
        if std::env::var("OBO_DEMO_SCOPE").is_err() {
            envoy.env("OBO_DEMO_SCOPE", "https://graph.microsoft.com/.default");
        }
        (None, "envoy/envoy-tenant.yaml")
    } else {
        let idp = MockIdp::try_start_on(ports.idp)
            .map_err(|e| format!("the mock Entra ID {e}; set IDP_PORT to a free port"))?;
        envoy
            .env("AZURE_APP_CLIENT_ID", CLIENT_ID)
            .env("AZURE_APP_CLIENT_SECRET", CLIENT_SECRET)
            .env("AZURE_OPENID_CONFIG_TOKEN_ENDPOINT", idp.endpoint());
        let file = match native {
            true => "envoy/envoy-native.yaml",
            false => "envoy/envoy.yaml",
        };
        (Some(idp), file)
    };
    let tenant = tenant && !workload_identity;
    let config = dir.join("envoy.json");
    let bootstrap = with_ports(&root.join(file), &ports, tenant)?;
    std::fs::write(&config, bootstrap.to_string()).map_err(|e| e.to_string())?;
    envoy
        .arg("-c")
        .arg(&config)
        .args([
            "--use-dynamic-base-id",
            "--component-log-level",
            if native {
                "dynamic_modules:debug"
            } else {
                "wasm:debug"
            },
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = envoy
        .spawn()
        .map_err(|e| format!("cannot start Envoy: {e}"))?;
    let log = EnvoyLog::follow(&mut child);
    if let Err(why) = wait_until_ready(&mut child, &ports, &log) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(why);
    }
    let rotation = workload_identity.then(|| obo_e2e::env_or("TOKEN_ROTATION_S", 20).max(1));
    println!("{}", ready_message(&ports, tenant, file, rotation));
    log.show_from_now_on();
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        return Ok(ExitCode::SUCCESS);
    }
    Err(format!("Envoy exited: {status}"))
}

/// Writes a token into `path` now and a new one every `every`, as the kubelet rotates a projected
/// service-account token, each replacing the last at once.
fn rotate_token_file(path: &Path, every: Duration) -> Result<(), String> {
    let write = |path: &Path, n: u64| {
        let next = path.with_extension("next");
        let token = federated_token(n, obo_e2e::now() + FEDERATED_TOKEN_LIFETIME_S);
        std::fs::write(&next, token).and_then(|()| std::fs::rename(&next, path))
    };
    write(path, 0).map_err(|e| format!("{}: {e}", path.display()))?;
    let path = path.to_path_buf();
    std::thread::spawn(move || {
        for n in 1.. {
            std::thread::sleep(every);
            if let Err(e) = write(&path, n) {
                eprintln!("make run: the token file {}: {e}", path.display());
            }
        }
    });
    Ok(())
}

/// The bootstrap in `file` with the ports of `ports`.
fn with_ports(file: &Path, ports: &Ports, tenant: bool) -> Result<Value, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut bootstrap: Value =
        serde::Deserialize::deserialize(serde_norway::Deserializer::from_str(&text))
            .map_err(|e| format!("{}: {e}", file.display()))?;
    bootstrap["admin"]["address"]["socket_address"]["port_value"] = ports.admin.into();
    let resources = &mut bootstrap["static_resources"];
    resources["listeners"][0]["address"]["socket_address"]["port_value"] = ports.listener.into();
    for cluster in resources["clusters"].as_array_mut().into_iter().flatten() {
        let port = match cluster["name"].as_str() {
            Some("echo_api") => ports.echo,
            Some("entra_id") if !tenant => ports.idp,
            _ => continue,
        };
        let endpoint = &mut cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0];
        endpoint["endpoint"]["address"]["socket_address"]["port_value"] = port.into();
    }
    Ok(bootstrap)
}

/// Envoy's log: kept while it starts (its start-up lines would bury the ready message, and a
/// failure is told in one line), shown as it comes once it is ready.
struct EnvoyLog {
    kept: Arc<Mutex<Vec<String>>>,
    shown: Arc<AtomicBool>,
}

impl EnvoyLog {
    fn follow(child: &mut Child) -> EnvoyLog {
        let kept = Arc::new(Mutex::new(Vec::new()));
        let shown = Arc::new(AtomicBool::new(false));
        if let Some(stderr) = child.stderr.take() {
            let (kept, shown) = (kept.clone(), shown.clone());
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if shown.load(Ordering::Relaxed) {
                        eprintln!("{line}");
                    } else if let Ok(mut kept) = kept.lock() {
                        kept.push(line);
                    }
                }
            });
        }
        EnvoyLog { kept, shown }
    }

    fn show_from_now_on(&self) {
        self.shown.store(true, Ordering::Relaxed);
    }

    /// What Envoy said last at error level or worse, without its timestamp and source: why it
    /// did not start.
    fn last_error(&self) -> Option<String> {
        let kept = self.kept.lock().ok()?;
        let line = kept
            .iter()
            .rev()
            .find(|l| l.contains("][critical]") || l.contains("][error]"))?;
        // `[time][thread][level][component] [file:line] message`, where the message may quote
        // the error between backticks.
        let message = line.rsplit_once("] ").map_or(line.as_str(), |(_, m)| m);
        let quoted = message.split('`').nth(1).filter(|q| !q.is_empty());
        Some(quoted.unwrap_or(message).trim().to_string())
    }
}

/// Waits until Envoy's admin says LIVE and its listener takes connections; Err if Envoy exits
/// first or takes longer than 30 s.
fn wait_until_ready(child: &mut Child, ports: &Ports, log: &EnvoyLog) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .into();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            // The reader may still be taking the last lines.
            std::thread::sleep(Duration::from_millis(200));
            let why = log.last_error().unwrap_or_else(|| status.to_string());
            let hint = if why.contains("bind") {
                format!(
                    "; set PORT (now {}) or ADMIN_PORT (now {}) to a free port",
                    ports.listener, ports.admin
                )
            } else {
                String::new()
            };
            return Err(format!("Envoy did not start: {why}{hint}"));
        }
        let live = agent
            .get(format!("http://127.0.0.1:{}/ready", ports.admin))
            .call()
            .ok()
            .and_then(|mut r| r.body_mut().read_to_string().ok())
            .is_some_and(|body| body.trim() == "LIVE");
        if live && std::net::TcpStream::connect(("127.0.0.1", ports.listener)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err("Envoy was not ready after 30 s; its log above says why".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `rotation`: with workload identity, how often the token file gets a new token (seconds).
fn ready_message(ports: &Ports, tenant: bool, file: &str, rotation: Option<u64>) -> String {
    let port = ports.listener;
    let (mode, bearer, scope) = if tenant {
        let scope = std::env::var("OBO_DEMO_SCOPE")
            .unwrap_or_else(|_| "https://graph.microsoft.com/.default".into());
        let hint = match std::env::var("OBO_DEMO_TOKEN") {
            Ok(t) if !t.is_empty() => String::new(),
            _ => "\n  (OBO_DEMO_TOKEN is not set: export it with an employee's token for this \
                  application first; docs/tenant.md shows how to get one)\n"
                .to_string(),
        };
        (
            format!("your Entra ID tenant ({file})"),
            format!("\"Authorization: Bearer $OBO_DEMO_TOKEN\"{hint}"),
            scope,
        )
    } else {
        (
            format!("a mock Entra ID on 127.0.0.1:{} ({file})", ports.idp),
            format!(
                "'Authorization: Bearer {}'",
                obo_e2e::user_token("employee-1")
            ),
            "api://local.demo.echo/.default".to_string(),
        )
    };
    format!(
        "\n\
         entra-obo-filter is ready: Envoy on 127.0.0.1:{port} (admin :{admin}), exchanging tokens\n\
         with {mode}, in front of an echo API on 127.0.0.1:{echo}.\n\n\
         Call the echo API through Envoy as an employee; it shows the token it received, an\n\
         on-behalf-of token for {scope} instead of the one you sent:\n\n  \
         curl -s -H 'Host: echo.local' -H {bearer} http://127.0.0.1:{port}/hello\n\n\
         Without a token, the filter answers 401 itself and nothing reaches the API:\n\n  \
         curl -si -H 'Host: echo.local' http://127.0.0.1:{port}/hello\n\n\
         {no_secret}Ctrl-C stops everything.\n",
        admin = ports.admin,
        echo = ports.echo,
        no_secret = rotation.map_or_else(String::new, |s| format!(
            "No client secret or key: the filter authenticates with a token file that Envoy serves\n\
             it from an internal listener, rewritten with a new token every {s} s; the mock Entra ID\n\
             trusts only the file's current token.\n\n"
        )),
    )
}
