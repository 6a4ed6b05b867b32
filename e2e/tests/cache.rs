//! The token cache and the shared exchange, end to end.

use std::time::Duration;

use obo_e2e::client::{bearer, get_and_hang_up};
use obo_e2e::mock_idp::{obo_token_for, Behaviour};
use obo_e2e::stack::{Stack, API_SCOPE};
use obo_e2e::{now, subject_token, user_token};
use serde_json::json;

fn ok(s: &Stack, subject: &str) {
    let r = s.get("api.example.com", "/", Some(&bearer(subject)));
    assert_eq!(r.status, 200, "{}", r.body);
}

/// Every request the upstream received carried the on-behalf-of token of `subject`, alone.
fn upstream_saw_only_the_obo_token_of(s: &Stack, subject: &str) {
    let expected = vec![bearer(&obo_token_for(subject, API_SCOPE))];
    for seen in s.upstream.seen() {
        assert_eq!(seen.authorization, expected, "on {}", seen.path);
    }
}

#[test]
fn repeated_requests_are_served_from_one_cache_across_workers() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    // Each request opens its own connection, so they spread over both workers.
    for _ in 0..12 {
        ok(&s, &subject);
    }
    assert_eq!(s.idp.count(), 1);
    upstream_saw_only_the_obo_token_of(&s, &subject);
}

#[test]
fn each_user_gets_their_own_token() {
    let s = Stack::start(json!({}));
    let (alice, bob) = (user_token("alice"), user_token("bob"));
    ok(&s, &alice);
    ok(&s, &bob);
    ok(&s, &alice);
    assert_eq!(s.idp.count(), 2);
    let seen: Vec<_> = s
        .upstream
        .seen()
        .into_iter()
        .map(|x| x.authorization)
        .collect();
    assert_eq!(seen[0], vec![bearer(&obo_token_for(&alice, API_SCOPE))]);
    assert_eq!(seen[1], vec![bearer(&obo_token_for(&bob, API_SCOPE))]);
    assert_eq!(seen[2], seen[0]);
}

#[test]
fn cached_token_expires_at_expires_in_minus_skew() {
    let s = Stack::start(json!({"cache": {"expiry_skew_s": 60}}));
    s.idp.set(Behaviour::Issue {
        expires_in: json!(62),
    });
    let subject = user_token("alice");
    ok(&s, &subject);
    ok(&s, &subject);
    assert_eq!(s.idp.count(), 1, "used within expires_in - skew");
    std::thread::sleep(Duration::from_millis(3100));
    ok(&s, &subject);
    assert_eq!(s.idp.count(), 2, "exchanged again after expires_in - skew");
}

#[test]
fn token_shorter_lived_than_the_skew_is_not_cached() {
    let s = Stack::start(json!({}));
    s.idp.set(Behaviour::Issue {
        expires_in: json!(30),
    });
    let subject = user_token("alice");
    ok(&s, &subject);
    ok(&s, &subject);
    assert_eq!(s.idp.count(), 2);
}

#[test]
fn cached_token_is_never_used_past_the_subject_tokens_exp() {
    let s = Stack::start(json!({}));
    let subject = subject_token("alice", now() + 2);
    ok(&s, &subject);
    ok(&s, &subject);
    assert_eq!(s.idp.count(), 1);
    std::thread::sleep(Duration::from_millis(3100));
    ok(&s, &subject);
    assert_eq!(
        s.idp.count(),
        2,
        "the subject token's exp ends the cached token's use"
    );
}

#[test]
fn cache_slots_are_bounded_by_max_entries() {
    // One slot: bob's token overwrites alice's, so alice exchanges again. (No per-worker front
    // cache, which would still hold alice's token for a few seconds.)
    let s = Stack::start(json!({"cache": {"max_entries": 1, "worker_entries": 0}}));
    let (alice, bob) = (user_token("alice"), user_token("bob"));
    for subject in [&alice, &bob, &alice] {
        ok(&s, subject);
    }
    assert_eq!(s.idp.count(), 3);
    let expected_last = vec![bearer(&obo_token_for(&alice, API_SCOPE))];
    assert_eq!(s.upstream.seen()[2].authorization, expected_last);
}

/// `n` requests with `authorization`, all sent at the same moment; their statuses and bodies.
fn get_at_once(s: &Stack, n: usize, authorization: &str) -> Vec<(u16, String)> {
    let port = s.envoy.port;
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (auth, barrier) = (authorization.to_string(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = obo_e2e::client::get(port, "api.example.com", "/", Some(&auth));
                (r.status, r.body)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

#[test]
fn concurrent_requests_on_one_worker_share_one_exchange() {
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 1);
    s.idp.set(Behaviour::Delay(
        Duration::from_millis(600),
        Box::new(Behaviour::issue()),
    ));
    let subject = user_token("alice");
    let answers = get_at_once(&s, 20, &bearer(&subject));
    assert!(
        answers.iter().all(|(st, _)| *st == 200),
        "{answers:?}\n{}",
        s.envoy.log()
    );
    assert_eq!(
        s.idp.count(),
        1,
        "one token request for twenty waiting requests"
    );
    assert_eq!(s.upstream.seen().len(), 20);
    upstream_saw_only_the_obo_token_of(&s, &subject);
}

#[test]
fn waiting_requests_are_served_when_the_first_caller_gives_up() {
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 1);
    s.idp.set(Behaviour::Delay(
        Duration::from_millis(800),
        Box::new(Behaviour::issue()),
    ));
    let subject = user_token("alice");
    let port = s.envoy.port;
    let auth = bearer(&subject);
    // The first caller sends the token request, then hangs up before it is answered.
    let first = get_and_hang_up(port, &auth, Duration::from_millis(300));
    std::thread::sleep(Duration::from_millis(100));
    let second = obo_e2e::client::get(port, "api.example.com", "/", Some(&auth));
    assert!(
        first.join().unwrap(),
        "the first caller was meant to time out"
    );
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        s.idp.count(),
        2,
        "the root context sent the token request again"
    );
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
}

#[test]
fn two_hundred_concurrent_requests_across_four_workers_cause_one_token_request() {
    let s = Stack::start_with(json!({}), |opts| opts.concurrency = 4);
    s.idp.set(Behaviour::Delay(
        Duration::from_millis(300),
        Box::new(Behaviour::issue()),
    ));
    let subject = user_token("alice");
    let answers = get_at_once(&s, 200, &bearer(&subject));
    let failed: Vec<&(u16, String)> = answers.iter().filter(|(st, _)| *st != 200).collect();
    assert!(
        failed.is_empty(),
        "{} not 200, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    assert_eq!(
        s.idp.count(),
        1,
        "one token request for 200 requests on four workers"
    );
    upstream_saw_only_the_obo_token_of(&s, &subject);
    assert_eq!(s.upstream.seen().len(), 200);
    // The requests did spread over the workers (Envoy counts connections per worker).
    let stats = s
        .envoy
        .admin("/stats?filter=worker_.*downstream_cx_total")
        .unwrap();
    let busy_workers = stats
        .lines()
        .filter(|l| l.starts_with("listener.127.0.0.1") && !l.ends_with(": 0"))
        .count();
    assert!(busy_workers >= 2, "{stats}");
}

#[test]
fn warm_key_never_waits_for_an_exchange_across_many_expiries() {
    // Tokens usable for 6 s (expires_in 66, skew 60), refreshed in their last half; the IdP takes
    // 300 ms to answer. Over 14 s the token is replaced at least twice, while eight callers on
    // kept-alive connections (both workers) keep sending, so requests arrive while each refresh
    // is sent, answered and stored. None of them waits.
    let s = Stack::start(json!({"cache": {"expiry_skew_s": 60, "refresh_ahead_percent": 50}}));
    s.idp.set(Behaviour::Delay(
        Duration::from_millis(300),
        Box::new(Behaviour::Issue {
            expires_in: json!(66),
        }),
    ));
    let subject = user_token("alice");
    ok(&s, &subject); // the one cold request
    let url = format!("http://127.0.0.1:{}/", s.envoy.port);
    let started = std::time::Instant::now();
    let (slow, sent): (Vec<(Duration, Duration, u16)>, usize) = std::thread::scope(|scope| {
        let callers: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .http_status_as_error(false)
                        .build()
                        .into();
                    let (mut slow, mut sent) = (Vec::new(), 0);
                    while started.elapsed() < Duration::from_secs(14) {
                        let at = started.elapsed();
                        let t = std::time::Instant::now();
                        let status = agent
                            .get(&url)
                            .header("host", "api.example.com")
                            .header("authorization", bearer(&subject))
                            .call()
                            .map(|r| r.status().as_u16())
                            .unwrap_or(0);
                        sent += 1;
                        if t.elapsed() >= Duration::from_millis(200) || status != 200 {
                            slow.push((at, t.elapsed(), status));
                        }
                    }
                    (slow, sent)
                })
            })
            .collect();
        callers.into_iter().map(|c| c.join().unwrap()).fold(
            (Vec::new(), 0),
            |(mut all, n), (slow, sent)| {
                all.extend(slow);
                (all, n + sent)
            },
        )
    });
    assert!(
        s.idp.count() >= 3,
        "refreshed ahead: {} token requests",
        s.idp.count()
    );
    assert!(
        slow.is_empty(),
        "of {sent} requests on the warm key, these waited or failed (started at, took, status): {slow:?}"
    );
}

#[test]
fn a_failed_refresh_keeps_serving_the_valid_token_until_it_expires() {
    // Tokens usable for 5 to 6 s (expires_in 66, skew 60, counted in whole seconds), refreshed
    // from half their life on. After the first exchange every token request fails.
    let s = Stack::start(json!({"cache": {"expiry_skew_s": 60, "refresh_ahead_percent": 50}}));
    s.idp.set(Behaviour::Issue {
        expires_in: json!(66),
    });
    let subject = user_token("alice");
    ok(&s, &subject);
    let issued = std::time::Instant::now();
    s.idp.set(Behaviour::Answer {
        status: 500,
        body: b"down".to_vec(),
        headers: vec![],
    });
    // In the refresh window, before the end of the token's life: served while refreshes fail.
    std::thread::sleep(Duration::from_millis(3_600));
    while issued.elapsed() < Duration::from_millis(4_800) {
        ok(&s, &subject);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        s.idp.count() >= 2,
        "a refresh was tried: {} token requests",
        s.idp.count()
    );
    upstream_saw_only_the_obo_token_of(&s, &subject);
    // Past its life the token is not used: the request is refused, not sent on.
    std::thread::sleep(Duration::from_millis(7_000).saturating_sub(issued.elapsed()));
    let forwarded = s.upstream.seen().len();
    let r = s.get("api.example.com", "/", Some(&bearer(&subject)));
    assert_ne!(r.status, 200, "{}", r.body);
    assert_eq!(s.upstream.seen().len(), forwarded);
    s.upstream.assert_never_saw(&subject);
}
