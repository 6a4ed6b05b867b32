//! `make run` as a newcomer meets it: the curl it prints works, and when a part cannot start it
//! exits non-zero with one line that says which, never with a panic or a "ready" it cannot keep.

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
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

/// `make run` with these ports, in a process group of its own that is stopped when dropped.
struct Run {
    child: Child,
}

impl Run {
    fn start(ports: [(&str, u16); 4]) -> Run {
        let mut command = Command::new(LOCAL_STACK);
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

#[test]
fn the_curl_make_run_prints_gets_the_echo_api_an_on_behalf_of_token() {
    let ports = ports();
    let mut run = Run::start(ports);
    let mut stdout = BufReader::new(run.child.stdout.take().expect("stdout"));
    let (mut ready, mut curl) = (false, None);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut line = String::new();
    while curl.is_none() && Instant::now() < deadline {
        line.clear();
        if stdout.read_line(&mut line).expect("read stdout") == 0 {
            break;
        }
        ready |= line.contains("entra-obo-filter is ready");
        if line.contains("curl -s ") && line.contains("Authorization: Bearer ") {
            curl = Some(line.trim().to_string());
        }
    }
    assert!(ready, "no ready line");
    let curl = curl.expect("no curl line printed");
    let token = curl
        .split("Authorization: Bearer ")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .expect("a token in the curl line");
    let port = ports[0].1;
    assert!(
        curl.ends_with(&format!("http://127.0.0.1:{port}/hello")),
        "{curl}"
    );
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
        lines[0].starts_with("make run: Envoy did not start: ")
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
        stderr.contains("make run: the mock Entra ID cannot listen on")
            && stderr.contains("set IDP_PORT"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
