//! A multi-tenant provider (`{tenant}` in `token_endpoint`): each user's token request goes to
//! their own tenant's endpoint, a tenant not allowed is refused without one, and one tenant's
//! backoff never refuses another tenant's users.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::Worker;
use crate::filter::Verdict;
use crate::testing::{
    answer, assert_authorization, configured, fixture_answer, jwt_with, ok_answer, request_from,
    FakeHost,
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
