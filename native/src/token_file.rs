//! Workload identity's federated token file, read by the module itself. The root fetches the
//! client assertion on Envoy's main thread (the configuration's callouts are made there), and the
//! shipped recipes serve the file from an internal listener, which only Envoy's worker threads
//! reach. So a fetch from the file's cluster is answered from the file, as the recipes answer it:
//! its content with 200, or 500 if it cannot be read (and a line in the log saying why).

use std::io::Read;

use obo_core::assertion_source::{FEDERATED_TOKEN_CLUSTER, MAX_ASSERTION_ANSWER_BYTES};
use obo_core::config::ENV_WI_TOKEN_FILE;
use obo_core::exchange::CallAnswer;

use crate::abi::LogLevel;
use crate::envoy;

/// The answer to a fetch from `cluster`, if it is the token file's and Envoy's environment names
/// the file (`AZURE_FEDERATED_TOKEN_FILE`, which Envoy's own environment holds for this build).
pub fn answer_for(cluster: &str) -> Option<CallAnswer> {
    if cluster != FEDERATED_TOKEN_CLUSTER {
        return None;
    }
    let path = std::env::var(ENV_WI_TOKEN_FILE).ok()?;
    // One byte past the limit is enough to tell that the file is too large.
    let mut body = Vec::new();
    let read = std::fs::File::open(&path).and_then(|file| {
        file.take(MAX_ASSERTION_ANSWER_BYTES as u64 + 1)
            .read_to_end(&mut body)
    });
    Some(match read {
        Ok(_) => CallAnswer {
            status: Some(200),
            body,
            ..CallAnswer::default()
        },
        Err(e) => {
            envoy::log(
                LogLevel::WARN,
                &format!("cannot read the federated token file {path}: {e}"),
            );
            CallAnswer {
                status: Some(500),
                ..CallAnswer::default()
            }
        }
    })
}
