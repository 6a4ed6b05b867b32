//! Refresh ahead: a token in the last tenth of its life is served while the root context fetches
//! the next one, once across all workers, and kept when the refresh fails.

use crate::filter::Verdict;
use crate::testing::{
    answer_at_root, assert_forwarded_with, fixture_answer, ok_answer, request_answered,
    request_from, tick, two_workers, worker, FakeHost, ROOT, U,
};

#[test]
fn token_in_its_refresh_window_is_served_while_the_root_refreshes_it() {
    let host = FakeHost::default();
    let w = worker();
    // expires_in 1060, skew 60: used for 1000 s; 10% of that (100 s) is the refresh window.
    request_answered(&host, &w, 10, U, ok_answer("obo-1", 1060.into()));
    host.now.set(host.now.get() + 899);
    assert_eq!(request_from(&host, &w, 11, U).1, Verdict::Continue);
    assert_eq!(host.tick_period_ms.get(), 0, "not yet in the window");
    host.now.set(host.now.get() + 1);
    assert_forwarded_with(&host, &w, 12, U, "Bearer obo-1");
    assert_eq!(
        host.token_requests(),
        1,
        "sent from the root, not from the request"
    );
    tick(&host, &w);
    let refresh = host.dispatched.borrow()[1].clone();
    assert_eq!(refresh.from, ROOT);
    // More requests while the refresh is out: served, no second refresh.
    assert_eq!(request_from(&host, &w, 13, U).1, Verdict::Continue);
    assert_eq!(host.token_requests(), 2);
    answer_at_root(&host, &w, 1, ok_answer("obo-2", 1060.into()));
    // The next request in the window finds the new token in the shared cache and is sent with it.
    assert_forwarded_with(&host, &w, 14, U, "Bearer obo-2");
}

#[test]
fn a_refresh_outlives_a_request_that_joined_it_and_went_away() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, U, ok_answer("obo-1", 1060.into()));
    host.now.set(host.now.get() + 999);
    request_from(&host, &w, 11, U);
    tick(&host, &w);
    // The token runs out before the refresh is answered: a request waits for the refresh, and
    // its caller hangs up.
    host.now.set(host.now.get() + 2);
    let (mut gone, verdict) = request_from(&host, &w, 12, U);
    assert_eq!(verdict, Verdict::Pause);
    gone.on_end(&host);
    answer_at_root(&host, &w, 1, ok_answer("obo-2", 1060.into()));
    assert_forwarded_with(&host, &w, 13, U, "Bearer obo-2");
    assert_eq!(host.token_requests(), 2, "the refresh's token was kept");
}

#[test]
fn failed_refresh_keeps_serving_the_valid_token() {
    let host = FakeHost::default();
    let w = worker();
    request_answered(&host, &w, 10, U, ok_answer("obo-1", 1060.into()));
    host.now.set(host.now.get() + 950);
    request_from(&host, &w, 11, U);
    tick(&host, &w);
    let rejected = fixture_answer(400, "error-invalid-grant-expired.json");
    answer_at_root(&host, &w, 1, rejected);
    host.now.set(host.now.get() + 6);
    assert_forwarded_with(&host, &w, 12, U, "Bearer obo-1");
    assert_eq!(host.token_requests(), 2, "the next try waits a little");
}

#[test]
fn a_token_refreshed_by_one_worker_is_not_refreshed_again_by_another() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    request_answered(&host, &a, 10, U, ok_answer("obo-1", 1060.into()));
    // Worker b caches the token in its front cache too.
    request_from(&host, &b, 20, U);
    host.now.set(host.now.get() + 901);
    // Worker a notices the window and refreshes.
    request_from(&host, &a, 11, U);
    tick(&host, &a);
    answer_at_root(&host, &a, 1, ok_answer("obo-2", 1060.into()));
    // Worker b's front entry is older, but the shared cache already has the new token.
    assert_eq!(request_from(&host, &b, 21, U).1, Verdict::Continue);
    assert_forwarded_with(&host, &b, 22, U, "Bearer obo-2");
    assert_eq!(tick(&host, &b), 0);
    assert_eq!(host.token_requests(), 2, "one refresh across the workers");
}
