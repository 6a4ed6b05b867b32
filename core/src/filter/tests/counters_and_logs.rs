//! What operators see: each request and exchange counted once under its outcome, the failed
//! exchange's log line, and no secret or token in any log line.

use crate::filter::RequestFilter;
use crate::host::LogLevel;
use crate::metrics::Counter as C;
use crate::testing::{
    answer, answer_every_try, fixture_answer, jwt_with_exp, no_answer, ok_answer, request,
    request_from, server_error, two_workers, worker, FakeHost, BEARER_U, BOB, SECRET, U,
};

#[test]
fn every_request_and_exchange_is_counted_once_by_its_outcome() {
    let host = FakeHost::default();
    let (w, w2) = two_workers();
    // A miss, its exchange succeeds; two hits: from the front cache of the worker that exchanged,
    // and from the shared cache on another worker.
    let (mut f, _) = request_from(&host, &w, 10, U);
    host.extra_ms.set(40);
    answer(&host, &mut f, 0, ok_answer("obo-u", 3600.into()));
    request_from(&host, &w, 11, U);
    request_from(&host, &w2, 12, U);
    // Passed through; refused locally for want of a token.
    request(&host, &w, 13, "other.example.com", "/", None);
    request(&host, &w, 14, "api.example.com", "/", None);
    // A miss whose exchange ends in invalid_grant, refusing its two waiters.
    let (mut f, _) = request_from(&host, &w, 15, BOB);
    request_from(&host, &w, 16, BOB);
    let expired = fixture_answer(400, "error-invalid-grant-expired.json");
    answer(&host, &mut f, 1, expired);
    assert_eq!(
        host.counters(),
        vec![
            (C::CacheHits.name(), 2),
            (C::CacheHitsShared.name(), 1),
            (C::CacheMisses.name(), 3),
            (C::ExchangesInvalidGrant.name(), 1),
            (C::ExchangesOk.name(), 1),
            (C::FailedExchange.name(), 2),
            (C::PassedThrough.name(), 1),
            (C::RejectedLocally.name(), 1),
        ]
    );
    assert_eq!(host.latencies_ms.borrow()[0], 40);
    assert_eq!(host.latencies_ms.borrow().len(), 2);
}

#[test]
fn exchange_outcomes_are_counted_under_their_names() {
    for (answer_to_give, counter) in [
        (
            fixture_answer(400, "error-interaction-required.json"),
            C::ExchangesInteractionRequired,
        ),
        (
            fixture_answer(429, "error-throttled.json"),
            C::ExchangesThrottled,
        ),
        (server_error(), C::ExchangesUpstreamError),
    ] {
        let host = FakeHost::default();
        let w = worker();
        let (mut f, _) = request_from(&host, &w, 10, U);
        answer_every_try(&host, &w, &mut f, answer_to_give);
        assert_eq!(
            host.counted(counter),
            1,
            "{counter:?}: {:?}",
            host.counters()
        );
    }
}

#[test]
fn failed_exchange_log_names_scope_host_request_id_and_idp_ids() {
    let host = FakeHost::default();
    let w = worker();
    host.open_stream(
        10,
        &[
            (":authority", "api.example.com"),
            (":path", "/"),
            ("authorization", BEARER_U),
            ("x-request-id", "req-42"),
        ],
    );
    let mut f = RequestFilter::new(10, w.clone());
    f.on_request_headers(&host);
    let expired = fixture_answer(400, "error-invalid-grant-expired.json");
    answer(&host, &mut f, 0, expired);
    let logs = host.logs.borrow();
    let line = logs
        .iter()
        .find(|(level, m)| *level == LogLevel::Warn && m.contains("token exchange failed"))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("no failed-exchange line in {logs:?}"));
    for part in [
        "scope=api://prod.team.api/.default",
        "host=api.example.com",
        "request_id=req-42",
        "error=invalid_grant",
        "error_codes=[",
        "trace_id=",
        "correlation_id=",
    ] {
        assert!(line.contains(part), "{part} missing from: {line}");
    }
    assert!(!line.contains(U), "the subject token is in the log: {line}");
}

#[test]
fn no_log_line_holds_a_secret_or_a_token() {
    let host = FakeHost::default();
    let w = worker();
    let not_json = crate::exchange::CallAnswer {
        status: Some(200),
        retry_after: None,
        overloaded: false,
        body: b"not json".to_vec(),
    };
    let answers = [
        ok_answer("issued-token-value", 3599.into()),
        fixture_answer(400, "error-invalid-grant-expired.json"),
        fixture_answer(400, "error-interaction-required.json"),
        fixture_answer(429, "error-throttled.json"),
        fixture_answer(401, "error-invalid-client.json"),
        not_json,
        no_answer(),
    ];
    let mut subjects = Vec::new();
    for (i, a) in answers.into_iter().enumerate() {
        let scope_host = if i % 2 == 0 {
            "api.example.com"
        } else {
            "x.team.svc.cluster.local"
        };
        host.now.set(host.now.get() + 10_000);
        let subject = jwt_with_exp(host.now.get() + 3600, &format!("user-{i}"));
        let bearer = format!("Bearer {subject}");
        let id = 100 + i as u32;
        let (mut f, _) = request(&host, &w, id, scope_host, "/v2/", Some(&bearer));
        answer_every_try(&host, &w, &mut f, a);
        subjects.push(subject);
    }
    request(&host, &w, 200, "api.example.com", "/", None);
    let logs = host.logs.borrow();
    assert!(
        logs.iter().any(|(l, _)| *l == LogLevel::Warn),
        "failures are logged"
    );
    for (_, line) in logs.iter() {
        let secrets = subjects
            .iter()
            .map(String::as_str)
            .chain([SECRET, "issued-token-value"]);
        for secret in secrets {
            assert!(!line.contains(secret), "log line leaks: {line}");
        }
    }
}
