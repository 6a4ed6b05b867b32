//! `make soak`: a bounded run on loopback. Envoy at `--concurrency 4` with the filter, `wrk`
//! driving many distinct users, a mock Entra ID that flaps between tokens, 500s and 429s. Checks
//! that every request reaching the upstream carries the OBO token issued for its own user (zero
//! cross-user tokens), that no subject token reaches it, and prints Envoy's memory after warm-up
//! and at the end. Some users are revoked: the upstream answers each of their requests 401
//! `insufficient_claims` (continuous access evaluation), so tokens are dropped and announced to
//! every worker all through the run, from all four workers at once (each worker drops a user's
//! token at most once per `cache.claims_challenge_holdoff_s`, and keeps it on later challenges).
//!
//! SOAK_SECONDS (default 60), SOAK_USERS (default 20000), SOAK_CONNECTIONS (default 64),
//! SOAK_REVOKED (default 50: every 50th user is revoked; 0: none).

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use obo_e2e::envoy::{Envoy, EnvoyOptions};
use obo_e2e::mock_idp::{obo_token_for, Behaviour, MockIdp, CLIENT_SECRET};
use obo_e2e::server::Server;
use obo_e2e::stack::{plugin_config, API_SCOPE};
use serde_json::json;

#[derive(Default)]
struct Tally {
    own_token: AtomicU64,
    /// Of those, the requests of revoked users, answered 401 `insufficient_claims`.
    revoked: AtomicU64,
    other_users_token: AtomicU64,
    subject_token: AtomicU64,
    unknown: AtomicU64,
}

fn memory_allocated(envoy: &Envoy) -> u64 {
    envoy
        .admin("/memory")
        .and_then(|m| obo_core::json::parse(&m).ok())
        .and_then(|m| m["allocated"].as_str().and_then(|a| a.parse().ok()))
        .unwrap_or(0)
}

fn main() {
    let seconds = obo_e2e::env_or("SOAK_SECONDS", 60);
    let users = obo_e2e::env_or("SOAK_USERS", 20_000) as usize;
    let connections = obo_e2e::env_or("SOAK_CONNECTIONS", 64);
    let revoked_every = obo_e2e::env_or("SOAK_REVOKED", 50) as usize;

    let tokens: Vec<String> = (0..users)
        .map(|i| obo_e2e::user_token(&format!("soak-user-{i}")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("tokens");
    std::fs::write(&token_file, tokens.join("\n")).unwrap();

    // The upstream checks each request's token against the one its user should have.
    let expected: Arc<Vec<String>> = Arc::new(
        tokens
            .iter()
            .map(|t| format!("Bearer {}", obo_token_for(t, API_SCOPE)))
            .collect(),
    );
    let subjects: Arc<Vec<String>> =
        Arc::new(tokens.iter().map(|t| format!("Bearer {t}")).collect());
    let tally = Arc::new(Tally::default());
    let (exp, subj, t) = (expected.clone(), subjects.clone(), tally.clone());
    let app = axum::Router::new().fallback(move |headers: HeaderMap| {
        let (exp, subj, t) = (exp.clone(), subj.clone(), t.clone());
        async move {
            let user: Option<usize> = headers
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let auth = headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let (counter, own) = match user
                .and_then(|u| u.checked_sub(1))
                .and_then(|u| exp.get(u).map(|e| (u, e)))
            {
                Some((u, e)) if e == auth => (&t.own_token, Some(u)),
                _ if subj.iter().any(|s| s == auth) => (&t.subject_token, None),
                Some(_) if auth.starts_with("Bearer obo-") => (&t.other_users_token, None),
                _ => (&t.unknown, None),
            };
            counter.fetch_add(1, Ordering::Relaxed);
            match own {
                Some(u) if revoked_every > 0 && u % revoked_every == 0 => {
                    t.revoked.fetch_add(1, Ordering::Relaxed);
                    (
                        StatusCode::UNAUTHORIZED,
                        [(
                            "www-authenticate",
                            r#"Bearer error="insufficient_claims", claims="eyJhY2Nlc3NfdG9rZW4iOnt9fQ==""#,
                        )],
                        "revoked",
                    )
                        .into_response()
                }
                _ => "ok".into_response(),
            }
        }
    });
    let upstream = Server::start(app);

    let idp = MockIdp::start();
    let throttle = Behaviour::Answer {
        status: 429,
        body: obo_e2e::fixture("error-throttled.json"),
        headers: vec![("Retry-After".into(), "1".into())],
    };
    let fail = Behaviour::Answer {
        status: 500,
        body: b"flap".to_vec(),
        headers: vec![],
    };
    let mut flapping = vec![Behaviour::issue(); 1000];
    for i in (100..1000).step_by(200) {
        flapping[i] = fail.clone();
    }
    flapping[999] = throttle;
    idp.set(Behaviour::Cycle(flapping));

    let config = plugin_config(&idp, &json!({"cache": {"max_entries": 10000}}));
    let mut opts = EnvoyOptions::new(&config, idp.port, upstream.port);
    opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
    opts.concurrency = 4;
    opts.wasm_log_level = "error";
    let envoy = Envoy::start(opts);

    println!(
        "soak: {seconds} s, {users} users ({} revoked), {connections} connections, Envoy --concurrency 4, IdP flapping (1 answer in 200 a 500, 1 in 1000 a 429 with Retry-After: 1)",
        if revoked_every > 0 { users.div_ceil(revoked_every) } else { 0 }
    );
    let started = Instant::now();
    let warmup = Duration::from_secs(seconds / 4);
    let wrk = Command::new("wrk")
        .args([
            "-t",
            "2",
            "-c",
            &connections.to_string(),
            "-d",
            &format!("{seconds}s"),
            "--latency",
        ])
        .args([
            "-s",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../soak/users.lua"),
        ])
        .arg(format!("http://127.0.0.1:{}/", envoy.port))
        .env("SOAK_TOKENS", &token_file)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("wrk (Debian package wrk) must be installed: make soak installs it");
    std::thread::sleep(warmup);
    let mem_warm = memory_allocated(&envoy);
    let mut samples = vec![mem_warm];
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_secs((seconds / 8).max(1)));
        samples.push(memory_allocated(&envoy));
    }
    let out = wrk.wait_with_output().expect("wrk output");
    let wrk_report = String::from_utf8_lossy(&out.stdout);
    let mem_end = memory_allocated(&envoy);

    println!("{wrk_report}");
    let own = tally.own_token.load(Ordering::Relaxed);
    let cross = tally.other_users_token.load(Ordering::Relaxed);
    let leaked = tally.subject_token.load(Ordering::Relaxed);
    let unknown = tally.unknown.load(Ordering::Relaxed);
    let revoked = tally.revoked.load(Ordering::Relaxed);
    println!("upstream: {own} requests with their own user's OBO token ({revoked} of them revoked users', answered 401 insufficient_claims), {cross} with another user's, {leaked} with a subject token, {unknown} other");
    // Every challenge the upstream sent is seen by the filter: it drops a token, or keeps it as
    // its worker dropped that user's token within the holdoff. Bar those whose caller wrk had
    // already hung up on when the run stopped (at most one per connection).
    let counter = |counters: &[(String, u64)], name: &str| {
        counters.iter().find(|(n, _)| n == name).map_or(0, |c| c.1)
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let (dropped, kept) = loop {
        let counters = envoy.obo_counters();
        let seen = (
            counter(&counters, "obo_upstream_claims_challenges"),
            counter(&counters, "obo_upstream_claims_challenges_kept"),
        );
        if seen.0 + seen.1 >= revoked || Instant::now() > deadline {
            break seen;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let challenges = dropped + kept;
    let challenges_ok = challenges <= revoked && challenges + connections >= revoked;
    println!("filter: {challenges} claims challenges seen: {dropped} dropped a token (obo_upstream_claims_challenges), {kept} kept it within cache.claims_challenge_holdoff_s (obo_upstream_claims_challenges_kept)");
    println!("token requests received by the IdP: {}", idp.count());
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    let samples_mib: Vec<String> = samples.iter().map(|b| format!("{:.1}", mib(*b))).collect();
    println!(
        "envoy allocated memory: {:.1} MiB after warm-up, {:.1} MiB at the end ({:+.1}%); samples {} MiB",
        mib(mem_warm),
        mib(mem_end),
        (mem_end as f64 / mem_warm.max(1) as f64 - 1.0) * 100.0,
        samples_mib.join(" ")
    );
    idp.assert_protocol_followed();
    let ok = cross == 0 && leaked == 0 && unknown == 0 && own > 0 && challenges_ok;
    println!("soak: {}", if ok { "PASS" } else { "FAIL" });
    drop(envoy);
    if !ok {
        std::process::exit(1);
    }
}
