//! A multi-tenant provider (`{tenant}` in `token_endpoint`): each user's token request goes to
//! their own tenant's endpoint, a tenant not allowed is refused without one, one tenant's
//! backoff never refuses another tenant's users, and a failed exchange counts for its tenant.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::{CallAnswer, Worker};
use crate::filter::Verdict;
use crate::host::DispatchError;
use crate::metrics::{Counter, MAX_TENANT_COUNTERS};
use crate::testing::{
    answer, answer_at_root, answer_every_try, assert_authorization, configured, fixture_answer,
    jwt_with, ok_answer, request_answered, request_from, server_error, tick, worker, FakeHost,
};

const CONTOSO: &str = "11111111-1111-1111-1111-111111111111";
const FABRIKAM: &str = "22222222-2222-2222-2222-222222222222";
const UNLISTED: &str = "33333333-3333-3333-3333-333333333333";

fn multi_tenant(allowed_tenants: serde_json::Value) -> Rc<RefCell<Worker>> {
    configured(serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_secret": "s",
        "allowed_tenants": allowed_tenants,
        "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]
    }))
}

fn user_of(tenant: &str, name: &str) -> String {
    jwt_with(&format!(
        r#"{{"exp":1800003600,"sub":"{name}","tid":"{tenant}"}}"#
    ))
}

fn path_of(host: &FakeHost, nth: usize) -> String {
    let d = host.dispatched.borrow()[nth].clone();
    d.header(":path").unwrap().to_string()
}

#[test]
fn each_users_token_request_goes_to_their_own_tenants_endpoint() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!([CONTOSO, FABRIKAM]));
    let (mut a, _) = request_from(&host, &w, 10, &user_of(CONTOSO, "ann"));
    let (mut b, _) = request_from(&host, &w, 11, &user_of(&FABRIKAM.to_uppercase(), "bob"));
    assert_eq!(path_of(&host, 0), format!("/{CONTOSO}/oauth2/v2.0/token"));
    assert_eq!(path_of(&host, 1), format!("/{FABRIKAM}/oauth2/v2.0/token"));
    answer(&host, &mut a, 0, ok_answer("obo-ann", 3600.into()));
    answer(&host, &mut b, 1, ok_answer("obo-bob", 3600.into()));
    assert_authorization(&host, 10, "Bearer obo-ann");
    assert_authorization(&host, 11, "Bearer obo-bob");
}

#[test]
fn a_tenant_not_allowed_or_no_tenant_is_401_without_a_token_request() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!([CONTOSO]));
    let no_tid = jwt_with(r#"{"exp":1800003600,"sub":"x"}"#);
    let not_a_guid = user_of("contoso.onmicrosoft.com", "y");
    for (id, user) in [
        (10, user_of(UNLISTED, "eve")),
        (11, no_tid),
        (12, not_a_guid),
    ] {
        let (_f, verdict) = request_from(&host, &w, id, &user);
        assert_eq!(verdict, Verdict::Pause);
        let reply = host.stream(id).reply.expect("refused");
        assert_eq!(reply.status, 401);
        assert!(reply.body.contains("tenant"), "{}", reply.body);
    }
    assert!(host.dispatched.borrow().is_empty());
}

#[test]
fn any_tenant_is_written_out_and_still_takes_a_guid() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!(["*"]));
    let (_f, _) = request_from(&host, &w, 10, &user_of(UNLISTED, "guest"));
    assert_eq!(path_of(&host, 0), format!("/{UNLISTED}/oauth2/v2.0/token"));
    let (_g, _) = request_from(&host, &w, 11, &user_of(r"..\u002fcommon", "z"));
    assert_eq!(host.stream(11).reply.expect("refused").status, 401);
    assert_eq!(host.dispatched.borrow().len(), 1);
}

#[test]
fn a_throttled_tenant_does_not_slow_another_tenants_users() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!(["*"]));
    let (mut a, _) = request_from(&host, &w, 10, &user_of(CONTOSO, "ann"));
    answer(
        &host,
        &mut a,
        0,
        fixture_answer(429, "error-throttled.json"),
    );
    assert_eq!(host.stream(10).reply.expect("throttled").status, 503);
    // Contoso backs off: its next user is refused at once, without a token request.
    let (_b, _) = request_from(&host, &w, 11, &user_of(CONTOSO, "amy"));
    assert_eq!(host.stream(11).reply.expect("backing off").status, 503);
    assert_eq!(host.dispatched.borrow().len(), 1);
    // Fabrikam's user exchanges as usual.
    let (mut c, verdict) = request_from(&host, &w, 12, &user_of(FABRIKAM, "bob"));
    assert_eq!(verdict, Verdict::Pause);
    assert_eq!(path_of(&host, 1), format!("/{FABRIKAM}/oauth2/v2.0/token"));
    answer(&host, &mut c, 1, ok_answer("obo-bob", 3600.into()));
    assert_authorization(&host, 12, "Bearer obo-bob");
}

#[test]
fn a_failed_exchange_is_logged_with_its_tenant_and_not_its_user() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!(["*"]));
    let (mut a, _) = request_from(&host, &w, 10, &user_of(CONTOSO, "ann"));
    answer(
        &host,
        &mut a,
        0,
        fixture_answer(400, "error-invalid-grant-expired.json"),
    );
    let logs = host.logs.borrow();
    let line = logs
        .iter()
        .map(|(_, l)| l)
        .find(|l| l.starts_with("token exchange failed"))
        .expect("a failed exchange's line");
    assert!(line.contains(&format!("tenant={CONTOSO}")), "{line}");
    assert!(!line.contains("ann"), "{line}");
}

#[test]
fn a_tid_that_would_change_the_token_requests_path_is_refused_before_any_request() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!(["*"]));
    let guid = "11111111-1111-1111-1111-111111111111";
    let tids = [
        format!("{guid}/.."),
        format!("..{}{guid}", '/'),
        format!("{guid}%2f.."),
        format!(" {guid}"),
        format!("{guid}\\n"),
        format!("{guid}?x=1"),
        format!("{{{guid}}}"),
        "11111111-1111-1111-1111-11111111111%".to_string(),
        "\u{ff11}1111111-1111-1111-1111-111111111111".to_string(),
        "+1111111-1111-1111-1111-111111111111".to_string(),
        String::new(),
    ];
    for (i, tid) in tids.iter().enumerate() {
        let id = 10 + i as u32;
        let (_f, _) = request_from(&host, &w, id, &user_of(tid, "mallory"));
        let reply = host.stream(id).reply.expect("refused");
        assert_eq!(reply.status, 401, "{tid:?}");
    }
    let tid_not_a_string = jwt_with(r#"{"exp":1800003600,"sub":"m","tid":["not-a-guid"]}"#);
    let (_f, _) = request_from(&host, &w, 99, &tid_not_a_string);
    assert_eq!(host.stream(99).reply.expect("refused").status, 401);
    assert!(host.dispatched.borrow().is_empty());
}

fn throttled() -> CallAnswer {
    fixture_answer(429, "error-throttled.json")
}

fn invalid_grant() -> CallAnswer {
    fixture_answer(400, "error-invalid-grant-expired.json")
}

fn counted(tenants: &[(&str, u64)]) -> Vec<(String, u64)> {
    tenants.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[test]
fn a_failed_exchange_counts_once_for_its_tenant_and_not_for_another() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!(["*"]));
    let (mut ann, _) = request_from(&host, &w, 10, &user_of(CONTOSO, "ann"));
    answer_every_try(&host, &w, &mut ann, server_error());
    assert_eq!(host.token_requests(), 2, "tried twice");
    let bob = user_of(FABRIKAM, "bob");
    request_answered(&host, &w, 11, &bob, ok_answer("t", 3600.into()));
    assert_eq!(host.tenant_failures(), counted(&[(CONTOSO, 1)]));
    // Contoso backs off: its next user is refused without an exchange, which counts nothing.
    request_from(&host, &w, 12, &user_of(CONTOSO, "amy"));
    assert_eq!(host.stream(12).reply.expect("backing off").status, 503);
    assert_eq!(host.tenant_failures(), counted(&[(CONTOSO, 1)]));
}

#[test]
fn a_successful_exchange_counts_for_no_tenant() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!([CONTOSO]));
    let ann = user_of(CONTOSO, "ann");
    request_answered(&host, &w, 10, &ann, ok_answer("t", 3600.into()));
    assert_authorization(&host, 10, "Bearer t");
    assert_eq!(host.tenant_failures(), []);
}

#[test]
fn a_provider_without_tenant_in_its_endpoint_counts_for_no_tenant() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, &user_of(CONTOSO, "ann"), throttled());
    assert_eq!(host.counted(Counter::ExchangesThrottled), 1);
    assert_eq!(host.tenant_failures(), []);
}

#[test]
fn past_the_cap_further_tenants_failures_count_as_other() {
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!(["*"]));
    let tenant = |n: usize| format!("{n:08x}-0000-4000-8000-000000000000");
    for n in 0..MAX_TENANT_COUNTERS + 2 {
        let id = 10 + n as u32;
        request_answered(&host, &w, id, &user_of(&tenant(n), "u"), invalid_grant());
    }
    // A tenant counted before the cap was reached keeps its own counter.
    request_answered(&host, &w, 9, &user_of(&tenant(0), "v"), invalid_grant());
    let failures = host.tenant_failures();
    assert_eq!(failures.len(), MAX_TENANT_COUNTERS + 1);
    assert!(failures.contains(&(tenant(0), 2)));
    assert!(failures.contains(&("other".to_string(), 2)));
    assert!(!failures
        .iter()
        .any(|(t, _)| *t == tenant(MAX_TENANT_COUNTERS)));
}

#[test]
fn an_exchange_refused_before_its_token_request_counts_for_its_tenant_too() {
    // The token request cannot be sent.
    let host = FakeHost::default();
    let w = multi_tenant(serde_json::json!(["*"]));
    host.dispatch_error.set(Some(DispatchError::UnknownCluster));
    request_from(&host, &w, 10, &user_of(CONTOSO, "ann"));
    assert_eq!(host.stream(10).reply.expect("refused").status, 503);
    assert_eq!(host.tenant_failures(), counted(&[(CONTOSO, 1)]));
    // No client assertion could be fetched for it.
    let host = FakeHost::default();
    let w = configured(serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_assertion_source": {"cluster": "federated_token"},
        "allowed_tenants": ["*"],
        "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]
    }));
    request_from(&host, &w, 10, &user_of(FABRIKAM, "bob"));
    tick(&host, &w);
    answer_at_root(&host, &w, 0, server_error());
    assert_eq!(host.stream(10).reply.expect("refused").status, 503);
    assert_eq!(host.counted(Counter::ClientAssertionFetchFailures), 1);
    assert_eq!(host.tenant_failures(), counted(&[(FABRIKAM, 1)]));
}
