//! One test's world: a mock Entra ID, a recording upstream and Envoy with the filter between.

use serde_json::{json, Value};

use crate::envoy::{Envoy, EnvoyOptions};
use crate::mock_idp::{MockIdp, CLIENT_ID, CLIENT_SECRET};
use crate::upstream::Upstream;

pub const API_SCOPE: &str = "api://prod.team.api/.default";
pub const OTHER_SCOPE: &str = "api://prod.team.other/.default";

pub struct Stack {
    pub idp: MockIdp,
    pub upstream: Upstream,
    pub envoy: Envoy,
}

/// The plugin configuration the suite uses, with `extra`'s top-level fields laid over it.
pub fn plugin_config(idp: &MockIdp, extra: &Value) -> Value {
    let mut cfg = json!({
        "token_cluster": "entra_id",
        "token_endpoint": idp.endpoint(),
        "client_id": CLIENT_ID,
        "client_secret": "${AZURE_APP_CLIENT_SECRET}",
        "targets": [
            {"host": "api.example.com", "scope": API_SCOPE},
            {"host": "*.team.svc.cluster.local", "path_prefix": "/v2/", "scope": OTHER_SCOPE}
        ]
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    cfg
}

impl Stack {
    pub fn start(extra: Value) -> Stack {
        Stack::start_with(extra, |_| {})
    }

    /// Starts the stack after `adjust` has had its say on Envoy's options.
    pub fn start_with(extra: Value, adjust: impl FnOnce(&mut EnvoyOptions)) -> Stack {
        Stack::start_for(MockIdp::start(), extra, adjust)
    }

    /// The same around a mock already started (so that `extra` may name its port) and told how
    /// to behave.
    pub fn start_for(idp: MockIdp, extra: Value, adjust: impl FnOnce(&mut EnvoyOptions)) -> Stack {
        let upstream = Upstream::start();
        let mut opts = EnvoyOptions::new(&plugin_config(&idp, &extra), idp.port, upstream.port);
        opts.vm_env = vec![("AZURE_APP_CLIENT_SECRET".into(), CLIENT_SECRET.into())];
        adjust(&mut opts);
        let envoy = Envoy::start(opts);
        Stack {
            idp,
            upstream,
            envoy,
        }
    }

    pub fn get(
        &self,
        authority: &str,
        path: &str,
        authorization: Option<&str>,
    ) -> crate::client::Response {
        crate::client::get(self.envoy.port, authority, path, authorization)
    }

    pub fn post(
        &self,
        authority: &str,
        path: &str,
        authorization: Option<&str>,
        body: &[u8],
    ) -> crate::client::Response {
        crate::client::post(self.envoy.port, authority, path, authorization, body)
    }
}
