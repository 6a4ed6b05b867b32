//! gRPC callers: the same exchange over HTTP/2, and every refusal as the gRPC status a gRPC client
//! acts on (Envoy turns a local reply to a gRPC request into a trailers-only gRPC answer).

use obo_e2e::client::bearer;
use obo_e2e::grpc_client::{call, GrpcAnswer};
use obo_e2e::mock_idp::{obo_token_for, Behaviour};
use obo_e2e::stack::{Stack, API_SCOPE};
use obo_e2e::upstream::{CLAIMS_CHALLENGE, GRPC_CLAIMS_CHALLENGE_METHOD};
use obo_e2e::user_token;
use serde_json::json;

const METHOD: &str = "/team.api.v1.Orders/Get";

/// Calls METHOD on `authority` with `subject` as the bearer token; every gRPC answer is HTTP 200,
/// refusals included.
fn call_with_token(s: &Stack, authority: &str, subject: &str) -> GrpcAnswer {
    let answer = call(s.envoy.port, authority, METHOD, Some(&bearer(subject)));
    assert_eq!(answer.http_status, 200, "{:?}", answer.headers);
    answer
}

#[test]
fn a_grpc_call_over_http2_reaches_the_upstream_with_the_obo_token() {
    let s = Stack::start(json!({}));
    let subject = user_token("alice");
    let answer = call_with_token(&s, "api.example.com", &subject);
    assert_eq!(answer.grpc_status(), None, "{:?}", answer.headers);
    let seen = s.upstream.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path, METHOD);
    assert_eq!(
        seen[0].authorization,
        vec![bearer(&obo_token_for(&subject, API_SCOPE))]
    );
    assert_eq!(s.idp.count(), 1);
}

#[test]
fn a_grpc_call_without_a_bearer_token_ends_unauthenticated_before_the_upstream() {
    let s = Stack::start(json!({}));
    let answer = call(s.envoy.port, "api.example.com", METHOD, None);
    assert_eq!(answer.http_status, 200, "{:?}", answer.headers);
    assert_eq!(answer.grpc_status(), Some("16"), "{:?}", answer.headers);
    assert!(s.upstream.seen().is_empty());
    assert_eq!(s.idp.count(), 0);
}

/// Calls for alice through a stack whose IdP behaves as told; checks that nothing reached the
/// upstream.
fn refused_call(behaviour: Behaviour) -> GrpcAnswer {
    let s = Stack::start(json!({}));
    s.idp.set(behaviour);
    let subject = user_token("alice");
    let answer = call_with_token(&s, "api.example.com", &subject);
    assert!(s.upstream.seen().is_empty(), "{:?}", s.upstream.seen());
    s.upstream.assert_never_saw(&subject);
    answer
}

#[test]
fn a_grpc_call_that_needs_a_step_up_ends_unauthenticated_with_the_claims_challenge() {
    let answer = refused_call(Behaviour::fixture(400, "error-interaction-required.json"));
    assert_eq!(answer.grpc_status(), Some("16"), "{:?}", answer.headers);
    let challenge = answer.header("www-authenticate").unwrap_or_default();
    assert!(
        challenge.starts_with("Bearer error=\"insufficient_claims\", claims=\""),
        "{:?}",
        answer.headers
    );
}

/// A gRPC upstream that no longer accepts the token answers `UNAUTHENTICATED` with the claims
/// challenge: the caller gets it as it came, and the token is dropped as after an HTTP 401.
#[test]
fn a_grpc_upstreams_claims_challenge_reaches_the_caller_and_drops_the_token() {
    let s = Stack::start_with(json!({}), |o| o.concurrency = 1);
    let subject = user_token("alice");
    assert_eq!(
        call_with_token(&s, "api.example.com", &subject).grpc_status(),
        None
    );
    let answer = call(
        s.envoy.port,
        "api.example.com",
        GRPC_CLAIMS_CHALLENGE_METHOD,
        Some(&bearer(&subject)),
    );
    assert_eq!(answer.grpc_status(), Some("16"), "{:?}", answer.headers);
    assert_eq!(answer.header("www-authenticate"), Some(CLAIMS_CHALLENGE));
    assert_eq!(
        s.envoy
            .obo_counter_once("obo_upstream_claims_challenges", 1),
        1
    );
    assert_eq!(
        call_with_token(&s, "api.example.com", &subject).grpc_status(),
        None
    );
    assert_eq!(s.idp.count(), 2, "the next call exchanged again");
}

#[test]
fn a_grpc_call_while_entra_id_throttles_ends_unavailable_so_the_client_may_retry() {
    let answer = refused_call(Behaviour::Answer {
        status: 429,
        body: obo_e2e::fixture("error-throttled.json"),
        headers: vec![("Retry-After".into(), "60".into())],
    });
    assert_eq!(answer.grpc_status(), Some("14"), "{:?}", answer.headers);
    let retry_after = answer.header("retry-after");
    assert_eq!(retry_after, Some("60"), "{:?}", answer.headers);
}

#[test]
fn other_refusals_take_the_grpc_status_of_their_http_status() {
    let s = Stack::start(json!({"unmatched": "deny", "token_timeout_ms": 300}));
    let subject = user_token("alice");
    // 403: no target for this host.
    assert_eq!(
        call_with_token(&s, "unknown.example.com", &subject).grpc_status(),
        Some("7")
    );
    // 502: Entra ID refuses the client.
    s.idp
        .set(Behaviour::fixture(401, "error-invalid-client.json"));
    let refused = call_with_token(&s, "api.example.com", &subject);
    assert_eq!(refused.grpc_status(), Some("14"));
    assert!(refused
        .header("grpc-message")
        .unwrap_or_default()
        .contains("invalid_client"));
    // 504: no answer within token_timeout_ms.
    s.idp.set(Behaviour::Delay(
        std::time::Duration::from_secs(2),
        Box::new(Behaviour::issue()),
    ));
    let timed_out = call_with_token(&s, "api.example.com", &subject);
    assert_eq!(timed_out.grpc_status(), Some("14"));
    assert!(timed_out
        .header("grpc-message")
        .unwrap_or_default()
        .contains("did not answer in time"));
    assert!(s.upstream.seen().is_empty());
    s.upstream.assert_never_saw(&subject);
}
