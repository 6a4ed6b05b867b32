//! The filter's metrics in Envoy's admin endpoint: after a known sequence of requests, `/stats`
//! and `/stats/prometheus` show exactly how many of each happened, summed over the workers, within
//! a second (each worker flushes its counts on its root context's tick).

use std::time::Duration;

use obo_e2e::client::bearer;
use obo_e2e::envoy::Build;
use obo_e2e::mock_idp::Behaviour;
use obo_e2e::stack::Stack;
use obo_e2e::user_token;
use serde_json::json;

/// Waits until `/stats` shows exactly `expected` (each worker hands its counts to Envoy on its root
/// context's tick, every second), and fails if it does not within 10 s.
fn assert_counters_become(s: &Stack, expected: &[(&str, u64)]) {
    let expected: Vec<(String, u64)> = expected.iter().map(|(n, v)| (n.to_string(), *v)).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while s.envoy.obo_counters() != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = s.envoy.admin("/stats?filter=obo_").unwrap_or_default();
    assert_eq!(s.envoy.obo_counters(), expected, "{stats}");
}

#[test]
fn a_hit_the_workers_front_cache_did_not_hold_counts_as_shared() {
    let s = Stack::start_with(json!({"cache": {"worker_entries": 1}}), |opts| {
        opts.concurrency = 1
    });
    s.idp.set(Behaviour::issue());
    let (alice, bob) = (user_token("alice"), user_token("bob"));
    // Alice and Bob exchange; Bob's token takes the front cache's one entry, so Alice's next
    // request reads hers from the shared cache, and her last one finds it in the front cache.
    for user in [&alice, &bob, &alice, &alice] {
        assert_eq!(
            s.get("api.example.com", "/", Some(&bearer(user))).status,
            200
        );
    }
    let expected = [
        ("obo_cache_hits", 2),
        ("obo_cache_hits_shared", 1),
        ("obo_cache_misses", 2),
        ("obo_client_assertion_fetch_failures", 0),
        ("obo_client_assertion_fetches", 0),
        ("obo_client_assertions_signed", 0),
        ("obo_exchanges_interaction_required", 0),
        ("obo_exchanges_invalid_grant", 0),
        ("obo_exchanges_ok", 2),
        ("obo_exchanges_refused_by_envoy", 0),
        ("obo_exchanges_throttled", 0),
        ("obo_exchanges_timeout", 0),
        ("obo_exchanges_upstream_error", 0),
        ("obo_requests_failed_exchange", 0),
        ("obo_requests_over_exchange_limit", 0),
        ("obo_requests_passed_through", 0),
        ("obo_requests_rejected_locally", 0),
        ("obo_requests_unmatched_stripped", 0),
        ("obo_upstream_claims_challenges", 0),
        ("obo_upstream_claims_challenges_kept", 0),
    ];
    assert_counters_become(&s, &expected);
}

#[test]
fn metrics_count_each_outcome_exactly_across_workers() {
    // No front cache: which worker serves a request is Envoy's choice, so every hit is made to
    // come from the shared cache (the next test tells the two apart on one worker).
    let s = Stack::start_with(
        json!({"token_timeout_ms": 400, "backoff": {"default_s": 0}, "negative_cache_s": 0,
               "cache": {"worker_entries": 0}}),
        |opts| opts.concurrency = 2,
    );
    let api = |user: &str| s.get("api.example.com", "/", Some(&bearer(&user_token(user))));
    // One exchange that succeeds, then two requests served from the cache.
    s.idp.set(Behaviour::issue());
    let alice = user_token("alice");
    for _ in 0..3 {
        assert_eq!(
            s.get("api.example.com", "/", Some(&bearer(&alice))).status,
            200
        );
    }
    // No target: passed through without Authorization, or stripped of it; refused locally (no
    // bearer token).
    assert_eq!(s.get("elsewhere.example.com", "/", None).status, 200);
    assert_eq!(
        s.get("elsewhere.example.com", "/", Some(&bearer(&alice)))
            .status,
        200
    );
    assert_eq!(s.get("api.example.com", "/", None).status, 401);
    // One exchange of each failing kind; each refuses its one request.
    for (user, behaviour, status) in [
        (
            "bob",
            Behaviour::fixture(400, "error-invalid-grant-expired.json"),
            401,
        ),
        (
            "carol",
            Behaviour::fixture(400, "error-interaction-required.json"),
            401,
        ),
        ("dave", Behaviour::fixture(429, "error-throttled.json"), 503),
        (
            "erin",
            Behaviour::fixture(503, "error-temporarily-unavailable.json"),
            503,
        ),
        (
            "frank",
            Behaviour::Delay(Duration::from_millis(1500), Box::new(Behaviour::issue())),
            504,
        ),
    ] {
        s.idp.set(behaviour);
        assert_eq!(api(user).status, status, "{user}");
    }
    let expected = [
        ("obo_cache_hits", 2),
        ("obo_cache_hits_shared", 2),
        ("obo_cache_misses", 6),
        ("obo_client_assertion_fetch_failures", 0),
        ("obo_client_assertion_fetches", 0),
        ("obo_client_assertions_signed", 0),
        ("obo_exchanges_interaction_required", 1),
        ("obo_exchanges_invalid_grant", 1),
        ("obo_exchanges_ok", 1),
        ("obo_exchanges_refused_by_envoy", 0),
        ("obo_exchanges_throttled", 1),
        ("obo_exchanges_timeout", 1),
        ("obo_exchanges_upstream_error", 1),
        ("obo_requests_failed_exchange", 5),
        ("obo_requests_over_exchange_limit", 0),
        ("obo_requests_passed_through", 1),
        ("obo_requests_rejected_locally", 1),
        ("obo_requests_unmatched_stripped", 1),
        ("obo_upstream_claims_challenges", 0),
        ("obo_upstream_claims_challenges_kept", 0),
    ];
    assert_counters_become(&s, &expected);
    // The same numbers under the same names in Prometheus's format, and one latency sample per
    // exchange once the histogram is flushed.
    let prefix = Build::under_test().prometheus_prefix();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let prometheus = loop {
        let text = s.envoy.admin("/stats/prometheus").unwrap_or_default();
        if text.contains(&format!("{prefix}obo_exchange_latency_ms_count{{}} 6"))
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (name, value) in &expected {
        let line = format!("{prefix}{name}{{}} {value}");
        assert!(
            prometheus.lines().any(|l| l == line),
            "no `{line}` in:\n{prometheus}"
        );
    }
    assert!(
        prometheus.contains(&format!("# TYPE {prefix}obo_exchange_latency_ms histogram"))
            && prometheus
                .lines()
                .any(|l| l == format!("{prefix}obo_exchange_latency_ms_count{{}} 6")),
        "{prometheus}"
    );
    // The timed-out exchange alone took the whole 400 ms budget.
    let sum = prometheus
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{prefix}obo_exchange_latency_ms_sum{{}} ")))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(sum >= 400.0, "latency sum {sum} ms:\n{prometheus}");
}
