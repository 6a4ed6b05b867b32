//! The native build's one worker state, shared by Envoy's worker threads behind a lock: one token
//! request per key across threads, and what the root does on Envoy's main thread (refreshes,
//! retries, the token requests of streams that left), whose answers reach the waiting streams on
//! their own threads. Envoy's log names the thread of each line, which tells the main thread's
//! work from a worker's.

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use obo_e2e::client::{bearer, get_and_hang_up};
use obo_e2e::envoy::Envoy;
use obo_e2e::mock_idp::{obo_token_for, Behaviour};
use obo_e2e::stack::{Stack, API_SCOPE};
use obo_e2e::user_token;
use serde_json::{json, Value};

use super::{native, supported_envoy_version};

/// `n` requests of `subject`, sent at once, each on its own connection; their statuses.
fn at_once(s: &Stack, n: usize, subject: &str) -> Vec<u16> {
    let (port, barrier) = (s.envoy.port, Arc::new(Barrier::new(n)));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (auth, barrier) = (bearer(subject), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                obo_e2e::client::get(port, "api.example.com", "/", Some(&auth)).status
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

/// How many of Envoy's workers took connections.
fn busy_workers(envoy: &Envoy) -> usize {
    let stats = envoy
        .admin("/stats?filter=worker_.*downstream_cx_total")
        .unwrap_or_default();
    stats
        .lines()
        .filter(|l| l.starts_with("listener.127.0.0.1") && !l.ends_with(": 0"))
        .count()
}

/// The thread (Envoy's log names it in a line's second field) of a log line.
fn thread_of(line: &str) -> Option<&str> {
    line.split("][").nth(1)
}

/// Envoy's main thread: the one that logs its start.
fn main_thread(log: &str) -> String {
    let line = log
        .lines()
        .find(|l| l.contains("initializing epoch"))
        .expect("Envoy logs its start");
    thread_of(line).unwrap_or_default().to_string()
}

/// The threads of the module's lines that say `what`, in order.
fn threads_saying(log: &str, what: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains("][dynamic_modules] ") && l.contains(what))
        .filter_map(|l| thread_of(l).map(str::to_string))
        .collect()
}

/// A request of `subject` answered 200 without waiting for the IdP (which takes a second).
fn served_at_once(s: &Stack, subject: &str) {
    let started = Instant::now();
    let r = s.get("api.example.com", "/", Some(&bearer(subject)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        started.elapsed() < Duration::from_millis(600),
        "the request waited"
    );
}

fn stack(extra: Value, idp: Behaviour) -> Stack {
    supported_envoy_version();
    let s = Stack::start_with(extra, |opts| {
        native(opts);
        opts.concurrency = 2;
    });
    s.idp.set(idp);
    s
}

#[test]
fn fifty_first_requests_of_one_user_on_two_worker_threads_make_one_token_request() {
    let s = stack(
        json!({}),
        Behaviour::Delay(Duration::from_millis(300), Box::new(Behaviour::issue())),
    );
    let subject = user_token("alice");
    let statuses = at_once(&s, 50, &subject);
    assert!(statuses.iter().all(|st| *st == 200), "{statuses:?}");
    assert_eq!(s.idp.count(), 1, "one token request for the fifty");
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 50);
    let obo = vec![bearer(&obo_token_for(&subject, API_SCOPE))];
    assert!(seen.iter().all(|r| r.authorization == obo));
    assert_eq!(
        busy_workers(&s.envoy),
        2,
        "the requests came on both threads"
    );
}

#[test]
fn a_token_is_refreshed_ahead_of_expiry_from_the_main_thread_with_no_request_waiting() {
    // Tokens usable for 6 s (expires_in 66, skew 60), refreshed from half their life on; the IdP
    // takes a second to answer, which no request waits for.
    let s = stack(
        json!({"cache": {"expiry_skew_s": 60, "refresh_ahead_percent": 50}}),
        Behaviour::Delay(
            Duration::from_millis(1000),
            Box::new(Behaviour::Issue {
                expires_in: json!(66),
            }),
        ),
    );
    let subject = user_token("alice");
    assert_eq!(
        s.get("api.example.com", "/", Some(&bearer(&subject)))
            .status,
        200
    );
    let issued = Instant::now();
    // In the refresh window: served at once with the cached token, and a refresh starts.
    std::thread::sleep(Duration::from_millis(3_600).saturating_sub(issued.elapsed()));
    served_at_once(&s, &subject);
    // The refresh is sent and answered with no request at all.
    let deadline = Instant::now() + Duration::from_secs(3);
    while s.idp.count() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.idp.count(), 2, "refreshed ahead of expiry");
    // Past the first token's life, the refreshed one serves without another token request.
    std::thread::sleep(Duration::from_millis(6_500).saturating_sub(issued.elapsed()));
    served_at_once(&s, &subject);
    assert_eq!(s.idp.count(), 2);
    // The first token came to a request's thread; the refresh's answer to the main thread.
    let log = s.envoy.log();
    let threads = threads_saying(&log, "token exchanged, cached for");
    assert_eq!(threads.len(), 2, "{log}");
    let main = main_thread(&log);
    assert_ne!(threads[0], main, "{log}");
    assert_eq!(threads[1], main, "{log}");
}

#[test]
fn a_server_error_is_retried_from_the_main_thread_and_the_waiting_request_resumed() {
    let s = stack(
        json!({}),
        Behaviour::Cycle(vec![
            Behaviour::Answer {
                status: 500,
                body: b"boom".to_vec(),
                headers: vec![],
            },
            Behaviour::issue(),
        ]),
    );
    let subject = user_token("alice");
    let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(s.idp.count(), 2, "one retry");
    let obo = vec![bearer(&obo_token_for(&subject, API_SCOPE))];
    assert_eq!(s.upstream.seen()[0].authorization, obo);
    // The failure came to the request's thread; the retry's answer to the main thread, which
    // handed the request its token through the request's own thread.
    let log = s.envoy.log();
    let (main, failed) = (main_thread(&log), threads_saying(&log, "retrying once"));
    assert_eq!(failed.len(), 1, "{log}");
    assert_ne!(failed[0], main, "{log}");
    assert_eq!(threads_saying(&log, "token exchanged"), vec![main], "{log}");
}

#[test]
fn when_the_request_that_sent_a_token_request_leaves_the_root_sends_it_for_the_others() {
    let s = stack(
        json!({}),
        Behaviour::Delay(Duration::from_millis(800), Box::new(Behaviour::issue())),
    );
    let subject = user_token("alice");
    // The first caller sends the token request, then hangs up before it is answered; its
    // callout goes with it.
    let first = get_and_hang_up(s.envoy.port, &bearer(&subject), Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(100));
    let statuses = at_once(&s, 16, &subject);
    assert!(
        first.join().unwrap(),
        "the first caller was meant to time out"
    );
    assert!(
        statuses.iter().all(|st| *st == 200),
        "{statuses:?}\n{}",
        s.envoy.log()
    );
    assert_eq!(s.idp.count(), 2, "the root sent the token request again");
    assert_eq!(s.upstream.seen().len(), 16);
    assert_eq!(
        busy_workers(&s.envoy),
        2,
        "the callers came on both threads"
    );
    // The second token request's answer came to the main thread.
    let log = s.envoy.log();
    assert_eq!(
        threads_saying(&log, "token exchanged"),
        vec![main_thread(&log)],
        "{log}"
    );
}
