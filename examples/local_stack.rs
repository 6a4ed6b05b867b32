//! `make run`: Envoy with the filter, in front of an echo API, on loopback.
//!
//! Without the AZURE_* variables it also starts a mock Entra ID token endpoint and uses
//! `envoy/envoy.yaml`. With AZURE_APP_CLIENT_ID, AZURE_APP_CLIENT_SECRET and
//! AZURE_OPENID_CONFIG_TOKEN_ENDPOINT set, it uses that real tenant through
//! `envoy/envoy-tenant.yaml`. Stop it with Ctrl-C.

#[path = "../tests/support/mod.rs"]
mod support;

use std::process::Command;

use support::mock_idp::{MockIdp, CLIENT_ID, CLIENT_SECRET};
use support::upstream::Upstream;

const MOCK_IDP_PORT: u16 = 18080;
const ECHO_PORT: u16 = 18081;
const TENANT_VARS: [&str; 3] = [
    "AZURE_APP_CLIENT_ID",
    "AZURE_APP_CLIENT_SECRET",
    "AZURE_OPENID_CONFIG_TOKEN_ENDPOINT",
];

fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let envoy_bin = support::envoy::envoy_bin();
    support::envoy::wasm_path();
    let tenant = TENANT_VARS
        .iter()
        .all(|v| std::env::var(v).is_ok_and(|x| !x.is_empty()));
    let _echo = Upstream::start_on(ECHO_PORT);
    let mut envoy = Command::new(envoy_bin);
    envoy
        .current_dir(root)
        .args(["--component-log-level", "wasm:debug", "-c"]);
    let (_idp, token) = if tenant {
        envoy.arg("envoy/envoy-tenant.yaml");
        if std::env::var("OBO_DEMO_SCOPE").is_err() {
            envoy.env("OBO_DEMO_SCOPE", "https://graph.microsoft.com/.default");
        }
        (
            None,
            "<an access token issued to an employee for this application>".to_string(),
        )
    } else {
        let idp = MockIdp::start_on(MOCK_IDP_PORT);
        envoy
            .arg("envoy/envoy.yaml")
            .env("AZURE_APP_CLIENT_ID", CLIENT_ID)
            .env("AZURE_APP_CLIENT_SECRET", CLIENT_SECRET)
            .env("AZURE_OPENID_CONFIG_TOKEN_ENDPOINT", idp.endpoint());
        (Some(idp), support::user_token("employee-1"))
    };
    let mut child = envoy.spawn().expect("start envoy");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let mode = if tenant {
        "your Entra ID tenant"
    } else {
        "a mock Entra ID on 127.0.0.1:18080"
    };
    println!(
        "\n\
         entra-obo-filter is running: Envoy on 127.0.0.1:10000 (admin :9901), exchanging tokens\n\
         with {mode}, in front of an echo API on 127.0.0.1:{ECHO_PORT}.\n\n\
         Call the echo API through Envoy as an employee; it shows the token it received, an\n\
         on-behalf-of token for api://local.demo.echo/.default instead of the one you sent:\n\n  \
         curl -s -H 'Host: echo.local' -H 'Authorization: Bearer {token}' http://127.0.0.1:10000/hello\n\n\
         Without a token, the filter answers 401 itself and nothing reaches the API:\n\n  \
         curl -si -H 'Host: echo.local' http://127.0.0.1:10000/hello\n\n\
         Ctrl-C stops everything.\n"
    );
    let status = child.wait().expect("wait for envoy");
    println!("envoy exited: {status}");
}
