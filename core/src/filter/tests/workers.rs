//! Several workers of one Envoy over one shared data: the shared cache, the lease that lets one
//! worker send the token request while the others wait, and drops signalled to every worker.

use std::cell::RefCell;
use std::rc::Rc;

use crate::exchange::{CallAnswer, Worker};
use crate::filter::Verdict;
use crate::testing::{
    answer, answer_at_root, assert_authorization, assert_forwarded_with, fixture_answer, ok_answer,
    read_no_token_from_shared_data, request_answered, request_from, tick, two_workers,
    upstream_asks_for_more_claims, FakeHost, ALICE, ROOT, U,
};

#[test]
fn second_worker_waits_for_the_first_workers_exchange() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    let (mut fa, _) = request_from(&host, &a, 10, U);
    let (_fb, v) = request_from(&host, &b, 20, U);
    let _fb2 = request_from(&host, &b, 21, U);
    assert_eq!(v, Verdict::Pause);
    assert_eq!(
        host.token_requests(),
        1,
        "only the first worker asks the IdP"
    );
    assert!(host.tick_period_ms.get() > 0, "the second worker polls");
    answer(&host, &mut fa, 0, ok_answer("obo-1", 3599.into()));
    assert_eq!(tick(&host, &b), 0);
    for id in [10, 20, 21] {
        assert!(host.stream(id).resumed, "stream {id}");
        assert_authorization(&host, id, "Bearer obo-1");
    }
    assert_eq!(host.token_requests(), 1);
}

type Shared = Rc<RefCell<Worker>>;

/// User U's request 10 on worker a sends the token request, their request 20 on worker b waits
/// for it, and a's token request is answered `call_answer`.
fn b_waits_while_a_exchanges(host: &FakeHost, call_answer: CallAnswer) -> (Shared, Shared) {
    let (a, b) = two_workers();
    let (mut fa, _) = request_from(host, &a, 10, U);
    request_from(host, &b, 20, U);
    answer(host, &mut fa, 0, call_answer);
    (a, b)
}

#[test]
fn after_an_exchange_the_users_next_request_finds_the_token_in_the_worker() {
    let host = FakeHost::default();
    // Worker a exchanges; worker b's request waits for a's exchange and reads its token.
    let (a, b) = b_waits_while_a_exchanges(&host, ok_answer("obo-1", 3599.into()));
    tick(&host, &b);
    assert!(host.stream(20).resumed);
    host.shared_reads.borrow_mut().clear();
    assert_forwarded_with(&host, &a, 11, U, "Bearer obo-1");
    assert_forwarded_with(&host, &b, 21, U, "Bearer obo-1");
    assert!(
        read_no_token_from_shared_data(&host),
        "{:?}",
        host.shared_reads.borrow()
    );
}

#[test]
fn waiting_worker_exchanges_itself_when_the_claimer_dies() {
    let host = FakeHost::default();
    let (a, b) = two_workers();
    let _fa = request_from(&host, &a, 10, U);
    let _fb = request_from(&host, &b, 20, U);
    tick(&host, &b);
    assert_eq!(
        host.token_requests(),
        1,
        "still waiting while the claim lives"
    );
    // Worker a never answers (its VM died); its claim runs out.
    host.extra_ms.set(5_000 + 500 + 1);
    b.borrow_mut().on_tick(&host, ROOT);
    let resent = host.dispatched.borrow()[1].clone();
    assert_eq!(resent.from, ROOT);
    answer_at_root(&host, &b, 1, ok_answer("obo-2", 3599.into()));
    assert!(host.stream(20).resumed);
}

#[test]
fn waiting_worker_takes_over_when_the_claimer_fails_without_a_token() {
    let host = FakeHost::default();
    let invalid_client = fixture_answer(401, "error-invalid-client.json");
    let (_, b) = b_waits_while_a_exchanges(&host, invalid_client);
    assert_eq!(host.stream(10).reply.unwrap().status, 502);
    tick(&host, &b);
    assert_eq!(
        host.token_requests(),
        2,
        "the claim was released; b asks itself"
    );
}

#[test]
fn waiting_worker_gets_the_remembered_invalid_grant() {
    let host = FakeHost::default();
    let expired = fixture_answer(400, "error-invalid-grant-expired.json");
    let (_, b) = b_waits_while_a_exchanges(&host, expired);
    tick(&host, &b);
    assert_eq!(host.stream(20).reply.unwrap().status, 401);
    assert_eq!(host.token_requests(), 1);
}

#[test]
fn a_token_dropped_on_one_worker_is_not_served_by_another_a_second_later() {
    let host = FakeHost::default();
    let (w1, w2) = two_workers();
    request_answered(&host, &w1, 10, U, ok_answer("obo-1", 3599.into()));
    // The other worker takes the token from the shared cache into its own.
    assert_eq!(request_from(&host, &w2, 11, U).1, Verdict::Continue);
    let (mut f, _) = request_from(&host, &w1, 12, U);
    upstream_asks_for_more_claims(&host, &mut f, 12);
    host.now.set(host.now.get() + 1);
    assert_eq!(
        request_from(&host, &w2, 13, U).1,
        Verdict::Pause,
        "exchanges again instead of sending the dropped token"
    );
    assert_eq!(host.token_requests(), 2);
}

#[test]
fn a_token_dropped_on_one_worker_leaves_the_other_users_in_the_other_workers_front_cache() {
    let host = FakeHost::default();
    let (w1, w2) = two_workers();
    request_answered(&host, &w1, 10, U, ok_answer("obo-u", 3599.into()));
    request_answered(&host, &w1, 11, ALICE, ok_answer("obo-alice", 3599.into()));
    // The other worker takes both tokens from the shared cache into its own.
    request_from(&host, &w2, 20, U);
    request_from(&host, &w2, 21, ALICE);
    let (mut f, _) = request_from(&host, &w1, 12, U);
    upstream_asks_for_more_claims(&host, &mut f, 12);
    host.now.set(host.now.get() + 1);
    host.shared_reads.borrow_mut().clear();
    let (_, v) = request_from(&host, &w2, 22, ALICE);
    assert_eq!(v, Verdict::Continue);
    assert_authorization(&host, 22, "Bearer obo-alice");
    assert!(
        read_no_token_from_shared_data(&host),
        "Alice is still served from the worker's own cache: {:?}",
        host.shared_reads.borrow()
    );
    assert_eq!(
        request_from(&host, &w2, 23, U).1,
        Verdict::Pause,
        "exchanges again instead of sending the dropped token"
    );
    assert_eq!(host.token_requests(), 3);
}
