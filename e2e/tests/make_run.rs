//! `make run` as a newcomer meets it: the curl it prints works, and when a part cannot start it
//! exits non-zero with one line that says which, never with a panic or a "ready" it cannot keep.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use obo_e2e::client::get;
use obo_e2e::mock_idp::obo_token_for;

/// The `make run` program (src/bin/local_stack.rs), which cargo builds for the suite.
const LOCAL_STACK: &str = env!("CARGO_BIN_EXE_local_stack");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// What the program's messages call it: `make run-native` with the native build.
fn make_command() -> &'static str {
    obo_e2e::envoy::Build::under_test().make_run()
}

/// `make run` with these ports, in a process group of its own that is stopped when dropped.
struct Run {
    child: Child,
    stdout: Option<BufReader<ChildStdout>>,
    /// Its files (Envoy's configuration, the token file), removed once it is stopped.
    dir: tempfile::TempDir,
}

impl Run {
    fn start(ports: [(&str, u16); 4]) -> Run {
        Run::start_with(ports, &[])
    }

    /// The same with these variables set too.
    fn start_with(ports: [(&str, u16); 4], env: &[(&str, &str)]) -> Run {
        let dir = tempfile::tempdir().expect("a folder for its files");
        let mut command = Command::new(LOCAL_STACK);
        command.envs(env.iter().copied()).env("RUN_DIR", dir.path());
        command
            .env("ENVOY_BIN", obo_e2e::envoy::envoy_bin())
            .envs(ports.iter().map(|(name, port)| (*name, port.to_string())))
            .env_remove("AZURE_APP_CLIENT_ID")
            .env_remove("AZURE_APP_CLIENT_SECRET")
            .env_remove("AZURE_OPENID_CONFIG_TOKEN_ENDPOINT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        Run {
            child: command.spawn().expect("start make run's program"),
            stdout: None,
            dir,
        }
    }

    /// Waits for it to end (30 s at most): its status, stdout and stderr.
    fn finish(mut self) -> Output {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().expect("wait").is_none() {
            assert!(Instant::now() < deadline, "make run did not exit");
            std::thread::sleep(Duration::from_millis(100));
        }
        let read = |stream: Option<&mut dyn Read>| {
            let mut text = String::new();
            if let Some(s) = stream {
                let _ = s.read_to_string(&mut text);
            }
            text
        };
        let stdout = read(self.child.stdout.as_mut().map(|s| s as &mut dyn Read));
        let stderr = read(self.child.stderr.as_mut().map(|s| s as &mut dyn Read));
        Output {
            status: self.child.wait().expect("status"),
            stdout: stdout.into_bytes(),
            stderr: stderr.into_bytes(),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill")
            .args(["-TERM", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.wait();
    }
}

fn ports() -> [(&'static str, u16); 4] {
    [
        ("PORT", free_port()),
        ("ADMIN_PORT", free_port()),
        ("ECHO_PORT", free_port()),
        ("IDP_PORT", free_port()),
    ]
}

/// Reads `make run`'s message once it is ready: the message, and the caller's token in the curl
/// it prints. Its stdout stays open as long as it runs (a closed one would end it at its next line).
fn ready_and_token(run: &mut Run, port: u16) -> (String, String) {
    let stdout = run
        .stdout
        .insert(BufReader::new(run.child.stdout.take().expect("stdout")));
    let (mut said, mut curl) = (String::new(), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while curl.is_none() && Instant::now() < deadline {
        line.clear();
        if stdout.read_line(&mut line).expect("read stdout") == 0 {
            break;
        }
        said.push_str(&line);
        if line.contains("curl -s ") && line.contains("Authorization: Bearer ") {
            curl = Some(line.trim().to_string());
        }
    }
    // The rest of the message, to its last line.
    while !said.contains("Ctrl-C stops everything") && Instant::now() < deadline {
        line.clear();
        if stdout.read_line(&mut line).expect("read stdout") == 0 {
            break;
        }
        said.push_str(&line);
    }
    assert!(
        said.contains("entra-obo-filter is ready"),
        "no ready line: {said}"
    );
    let curl = curl.expect("no curl line printed");
    assert!(
        curl.ends_with(&format!("http://127.0.0.1:{port}/hello")),
        "{curl}"
    );
    let token = curl
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a token in the curl line")
        .to_string();
    (said, token)
}

fn echo_gets_its_on_behalf_of_token(port: u16, token: &str) {
    let r = get(
        port,
        "echo.local",
        "/hello",
        Some(&format!("Bearer {token}")),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let expected = obo_token_for(token, "api://local.demo.echo/.default");
    assert!(r.body.contains(&expected), "{}", r.body);
}

#[test]
fn the_curl_make_run_prints_gets_the_echo_api_an_on_behalf_of_token() {
    let ports = ports();
    let mut run = Run::start(ports);
    let (_, token) = ready_and_token(&mut run, ports[0].1);
    echo_gets_its_on_behalf_of_token(ports[0].1, &token);
}

#[test]
fn make_run_with_workload_identity_exchanges_with_a_rotated_token_file_and_no_secret() {
    let ports = ports();
    let mut run = Run::start_with(
        ports,
        &[("WORKLOAD_IDENTITY", "1"), ("TOKEN_ROTATION_S", "1")],
    );
    let (said, token) = ready_and_token(&mut run, ports[0].1);
    assert!(
        said.contains("envoy/envoy-workload-identity.yaml"),
        "{said}"
    );
    assert!(said.contains("No client secret or key"), "{said}");
    echo_gets_its_on_behalf_of_token(ports[0].1, &token);
    let token_file = run.dir.path().join("azure-identity-token");
    let before = std::fs::read_to_string(&token_file).expect("the token file");
    // After a rotation (the held token is refused now), a new caller still gets a token.
    std::thread::sleep(Duration::from_millis(1500));
    let after = std::fs::read_to_string(&token_file).expect("the token file");
    assert_ne!(before, after, "the token file was not rotated");
    let next_user = obo_e2e::user_token("employee-2");
    echo_gets_its_on_behalf_of_token(ports[0].1, &next_user);
}

#[test]
fn a_taken_envoy_port_is_one_line_and_a_failed_exit() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let mut ports = ports();
    ports[0].1 = taken.local_addr().unwrap().port();
    let out = Run::start(ports).finish();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(!out.status.success());
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "one line, not Envoy's log: {stderr}");
    assert!(
        lines[0].starts_with(&format!("{}: Envoy did not start: ", make_command()))
            && lines[0].contains("set PORT (now"),
        "{stderr}"
    );
    assert!(!stdout.contains("is ready"), "{stdout}");
}

#[test]
fn a_taken_mock_idp_port_is_one_line_and_a_failed_exit() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("a port to take");
    let mut ports = ports();
    ports[3].1 = taken.local_addr().unwrap().port();
    let out = Run::start(ports).finish();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains(&format!(
            "{}: the mock Entra ID cannot listen on",
            make_command()
        )) && stderr.contains("set IDP_PORT"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
