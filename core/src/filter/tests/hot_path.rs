//! A cache hit allocates nothing of its own, counted by the test allocator through a host that
//! itself allocates nothing.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::Worker;
use crate::filter::{RequestFilter, Verdict};
use crate::host::HeaderValues;
use crate::testing::allocations::{allocations_in, hit_host};
use crate::testing::{answer, configured, ok_answer, request_from, FakeHost, SUBJECT_1};

/// A worker whose caches hold the OBO token for `SUBJECT_1`.
fn warm_worker(host: &FakeHost) -> Rc<RefCell<Worker>> {
    let w = configured(serde_json::json!({
        "token_cluster": "entra_id",
        "token_endpoint": "https://login.example/tenant/oauth2/v2.0/token",
        "client_id": "client-1",
        "client_secret": "client-secret-value",
        "targets": [{"host": "api.example.com", "scope": "api://prod.team.api/.default"}]
    }));
    let (mut first, verdict) = request_from(host, &w, 10, SUBJECT_1);
    assert_eq!(verdict, Verdict::Pause);
    answer(host, &mut first, 0, ok_answer("obo-1", 3599.into()));
    // The first hit takes the token from the shared cache into the worker's own, and makes the
    // counters' entries.
    let warm_up = hit_host(host, "Bearer obo-1");
    assert_eq!(
        RequestFilter::new(11, w.clone()).on_request_headers(&warm_up),
        Verdict::Continue
    );
    assert!(warm_up.sent_expected.get());
    w
}

#[test]
fn no_header_value_of_a_request_stays_in_the_worker_after_it() {
    let fake = FakeHost::default();
    let w = warm_worker(&fake);
    let kept = w.borrow_mut().take_header_buffer();
    assert!((0..HeaderValues::MAX).all(|i| kept.bytes(i).is_none()));
}

#[test]
fn a_cache_hit_allocates_nothing() {
    let fake = FakeHost::default();
    let w = warm_worker(&fake);
    let host = hit_host(&fake, "Bearer obo-1");
    let allocations = allocations_in(|| {
        let mut filter = RequestFilter::new(12, w.clone());
        assert_eq!(filter.on_request_headers(&host), Verdict::Continue);
        filter.on_response_headers(&host);
    });
    assert!(host.sent_expected.get(), "sent with the OBO token");
    assert_eq!(allocations, 0);
}
