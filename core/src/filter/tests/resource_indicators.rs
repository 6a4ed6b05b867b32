//! RFC 8707 resource indicators (`targets[].resource`): sent as one `resource` parameter each,
//! and part of what a cached token is for.

use crate::filter::Verdict;
use crate::testing::{answer, assert_authorization, configured, ok_answer, request, SECRET};

fn app_worker() -> std::rc::Rc<std::cell::RefCell<crate::exchange::Worker>> {
    configured(serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_secret": SECRET,
        "grant": "client_credentials",
        "targets": [
            {"host": "mcp-a.example.com", "scope": "api://tools/.default",
             "resource": ["https://mcp-a.example.com/", "https://mcp-a.example.com/files"]},
            {"host": "mcp-b.example.com", "scope": "api://tools/.default",
             "resource": "https://mcp-b.example.com/"}
        ]
    }))
}

#[test]
fn each_resource_indicator_is_its_own_resource_parameter() {
    let host = crate::testing::FakeHost::default();
    let w = app_worker();
    let (mut f, verdict) = request(&host, &w, 10, "mcp-a.example.com", "/", None);
    assert_eq!(verdict, Verdict::Pause);
    let sent = host.dispatched.borrow()[0].clone();
    let resources: Vec<&str> = sent
        .form
        .iter()
        .filter(|(n, _)| n == "resource")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(
        resources,
        [
            "https://mcp-a.example.com/",
            "https://mcp-a.example.com/files"
        ]
    );
    assert_eq!(sent.field("scope"), Some("api://tools/.default"));
    answer(&host, &mut f, 0, ok_answer("token-for-a", 3600.into()));
    assert_authorization(&host, 10, "Bearer token-for-a");
}

#[test]
fn targets_with_the_same_scope_and_other_resources_never_share_a_token() {
    let host = crate::testing::FakeHost::default();
    let w = app_worker();
    let (mut a, _) = request(&host, &w, 10, "mcp-a.example.com", "/", None);
    answer(&host, &mut a, 0, ok_answer("token-for-a", 3600.into()));
    let (mut b, verdict) = request(&host, &w, 11, "mcp-b.example.com", "/", None);
    assert_eq!(
        verdict,
        Verdict::Pause,
        "b's token is asked for, not taken from a's"
    );
    assert_eq!(
        host.dispatched.borrow()[1].field("resource"),
        Some("https://mcp-b.example.com/")
    );
    answer(&host, &mut b, 1, ok_answer("token-for-b", 3600.into()));
    assert_authorization(&host, 11, "Bearer token-for-b");
    let (_c, verdict) = request(&host, &w, 12, "mcp-a.example.com", "/", None);
    assert_eq!(verdict, Verdict::Continue);
    assert_authorization(&host, 12, "Bearer token-for-a");
}
