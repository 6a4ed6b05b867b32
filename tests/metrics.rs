//! The filter's metrics in Envoy's admin endpoint: after a known sequence of requests, `/stats`
//! and `/stats/prometheus` show exactly how many of each happened, summed over the workers, within
//! a second (each worker flushes its counts on its root context's tick).

mod support;

use std::time::Duration;

use serde_json::json;
use support::client::bearer;
use support::mock_idp::Behaviour;
use support::stack::Stack;
use support::user_token;

/// The counter values in `/stats` (names without Envoy's `wasmcustom.` prefix).
fn counters(s: &Stack) -> Vec<(String, u64)> {
    let text = s.envoy.admin("/stats?filter=obo_").unwrap_or_default();
    let mut out: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let (name, value) = l.split_once(": ")?;
            Some((
                name.trim_start_matches("wasmcustom.").to_string(),
                value.trim().parse().ok()?,
            ))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn metrics_count_each_outcome_exactly_across_workers() {
    let s = Stack::start_with(
        json!({"token_timeout_ms": 400, "backoff": {"default_s": 0}, "negative_cache_s": 0}),
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
    // Passed through (no target), refused locally (no bearer token).
    assert_eq!(s.get("elsewhere.example.com", "/", None).status, 200);
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
    let expected: Vec<(String, u64)> = [
        ("obo_cache_hits", 2),
        ("obo_cache_misses", 6),
        ("obo_client_assertions_signed", 0),
        ("obo_exchanges_interaction_required", 1),
        ("obo_exchanges_invalid_grant", 1),
        ("obo_exchanges_ok", 1),
        ("obo_exchanges_throttled", 1),
        ("obo_exchanges_timeout", 1),
        ("obo_exchanges_upstream_error", 1),
        ("obo_requests_failed_exchange", 5),
        ("obo_requests_passed_through", 1),
        ("obo_requests_rejected_locally", 1),
    ]
    .iter()
    .map(|(n, v)| (n.to_string(), *v))
    .collect();
    // Each worker hands its counts to Envoy on its root context's tick (every second).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while counters(&s) != expected && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let stats = s.envoy.admin("/stats?filter=obo_").unwrap_or_default();
    assert_eq!(counters(&s), expected, "{stats}");
    // The same numbers under the same names in Prometheus's format, and one latency sample per
    // exchange once the histogram is flushed.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let prometheus = loop {
        let text = s.envoy.admin("/stats/prometheus").unwrap_or_default();
        if text.contains("obo_exchange_latency_ms_count{} 6")
            || std::time::Instant::now() > deadline
        {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for (name, value) in &expected {
        let line = format!("{name}{{}} {value}");
        assert!(
            prometheus.lines().any(|l| l == line),
            "no `{line}` in:\n{prometheus}"
        );
    }
    assert!(
        prometheus.contains("# TYPE obo_exchange_latency_ms histogram")
            && prometheus
                .lines()
                .any(|l| l == "obo_exchange_latency_ms_count{} 6"),
        "{prometheus}"
    );
    // The timed-out exchange alone took the whole 400 ms budget.
    let sum = prometheus
        .lines()
        .find_map(|l| l.strip_prefix("obo_exchange_latency_ms_sum{} "))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(sum >= 400.0, "latency sum {sum} ms:\n{prometheus}");
}
