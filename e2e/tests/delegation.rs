//! Delegation (RFC 8693 `actor`) in the real Envoy: an agent's exchange at its security token
//! service carries the agent's own client-credentials token from Entra ID as `actor_token`.

use obo_e2e::client::bearer;
use obo_e2e::envoy::cluster;
use obo_e2e::mock_idp::{delegated_token_for, Behaviour, MockIdp, CLIENT_ID};
use obo_e2e::stack::Stack;
use obo_e2e::{fixture, user_token};
use serde_json::{json, Value};

const STS_CLIENT_ID: &str = "agent-app";
const ACTOR_SCOPE: &str = "api://sts.example/.default";
const MCP_AUDIENCE: &str = "https://mcp.example.com/";
const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";

/// The actor's token endpoint (Entra ID, the stack's mock) issues `token`, good for `expires_in`.
fn actor_token(token: &str, expires_in: u64) -> Behaviour {
    let body = json!({"token_type": "Bearer", "access_token": token, "expires_in": expires_in});
    Behaviour::Answer {
        status: 200,
        body: body.to_string().into_bytes(),
        headers: Vec::new(),
    }
}

struct Delegation {
    stack: Stack,
    sts: MockIdp,
}

/// Envoy with a `token_exchange` provider at the mock STS whose actor is the `agent` provider,
/// Entra ID's client credentials at the stack's mock.
fn delegation(actor: Behaviour) -> Delegation {
    let entra = MockIdp::start();
    entra.set(actor);
    let sts = MockIdp::start();
    sts.expect_client_id(STS_CLIENT_ID);
    sts.accept_actor_tokens_from(&entra);
    let extra = json!({
        "token_cluster": "sts",
        "token_endpoint": sts.endpoint(),
        "client_id": STS_CLIENT_ID,
        "grant": "token_exchange",
        "actor": {"provider": "agent", "scope": ACTOR_SCOPE},
        "providers": {
            "agent": {"token_cluster": "entra_id", "token_endpoint": entra.endpoint(),
                      "client_id": CLIENT_ID, "client_secret": "${AZURE_APP_CLIENT_SECRET}",
                      "grant": "client_credentials"}
        },
        "targets": [{"host": "mcp.example.com", "audience": MCP_AUDIENCE}],
        // Tokens are used until the end the IdP gives, so a test can outlast one.
        "cache": {"expiry_skew_s": 0}
    });
    let sts_port = sts.port;
    let stack = Stack::start_for(entra, extra, |opts| {
        opts.bootstrap_patch = Some(Box::new(move |bootstrap: &mut Value| {
            bootstrap["static_resources"]["clusters"]
                .as_array_mut()
                .unwrap()
                .push(cluster("sts", Some(sts_port)));
        }));
    });
    Delegation { stack, sts }
}

impl Delegation {
    /// GET mcp.example.com as `subject`: the status and the Authorization the upstream saw.
    fn call(&self, subject: &str) -> (u16, Option<String>) {
        let before = self.stack.upstream.seen().len();
        let r = self
            .stack
            .get("mcp.example.com", "/", Some(&bearer(subject)));
        let seen = self.stack.upstream.seen();
        let forwarded = seen.get(before).map(|s| s.authorization.join(", "));
        (r.status, forwarded)
    }

    /// The actor token of each exchange at the STS, in order.
    fn actor_tokens_sent(&self) -> Vec<Option<String>> {
        let requests = self.sts.requests();
        requests
            .iter()
            .map(|r| r.field("actor_token").map(str::to_string))
            .collect()
    }
}

#[test]
fn a_delegated_exchange_carries_the_actors_token() {
    let d = delegation(actor_token("actor-1", 3600));
    let (alice, bob) = (user_token("alice"), user_token("bob"));
    for subject in [&alice, &bob, &alice] {
        let expected = bearer(&delegated_token_for(subject, MCP_AUDIENCE, "actor-1"));
        assert_eq!(d.call(subject), (200, Some(expected)));
    }
    d.stack.idp.assert_protocol_followed();
    d.sts.assert_protocol_followed();
    // One actor token for both users, asked for once, with the client-credentials grant.
    let actor_requests = d.stack.idp.requests();
    assert_eq!(actor_requests.len(), 1);
    assert_eq!(
        actor_requests[0].field("grant_type"),
        Some("client_credentials")
    );
    assert_eq!(actor_requests[0].field("scope"), Some(ACTOR_SCOPE));
    let exchanges = d.sts.requests();
    assert_eq!(
        exchanges.len(),
        2,
        "alice's second call came from the cache"
    );
    for (exchange, subject) in exchanges.iter().zip([&alice, &bob]) {
        assert_eq!(exchange.field("subject_token"), Some(subject.as_str()));
        assert_eq!(exchange.field("actor_token"), Some("actor-1"));
        assert_eq!(exchange.field("actor_token_type"), Some(ACCESS_TOKEN_TYPE));
        assert_eq!(exchange.field("audience"), Some(MCP_AUDIENCE));
    }
}

#[test]
fn a_new_actor_token_changes_the_cached_token() {
    let d = delegation(actor_token("actor-1", 2));
    let alice = user_token("alice");
    let with = |actor: &str| Some(bearer(&delegated_token_for(&alice, MCP_AUDIENCE, actor)));
    assert_eq!(d.call(&alice), (200, with("actor-1")));
    assert_eq!(d.call(&alice), (200, with("actor-1")), "from the cache");
    d.stack.idp.set(actor_token("actor-2", 3600));
    // The delegated token (an hour at the STS) is used no longer than actor-1 (2 s).
    std::thread::sleep(std::time::Duration::from_millis(2_500));
    assert_eq!(d.call(&alice), (200, with("actor-2")));
    assert_eq!(d.call(&alice), (200, with("actor-2")), "from the cache");
    assert_eq!(
        d.actor_tokens_sent(),
        [Some("actor-1".to_string()), Some("actor-2".to_string())]
    );
    assert_eq!(d.stack.idp.count(), 2);
}

#[test]
fn when_the_actors_token_is_refused_the_caller_is_refused_and_nothing_reaches_the_sts() {
    let refused = Behaviour::Answer {
        status: 401,
        body: fixture("error-invalid-client.json"),
        headers: Vec::new(),
    };
    let d = delegation(refused);
    let alice = user_token("alice");
    let r = d.stack.get("mcp.example.com", "/", Some(&bearer(&alice)));
    // The status of any exchange Entra ID refused for the application's credentials.
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(d.sts.count(), 0);
    assert!(d.stack.upstream.seen().is_empty());
    d.stack.upstream.assert_never_saw(&alice);
}
