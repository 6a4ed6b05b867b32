//! A token request's answer as the core reads it (`CallAnswer`), from what Envoy hands a callout's
//! done hook: read exactly as the Wasm shell reads its own (`wasm/src/host_calls.rs`).

use obo_core::exchange::CallAnswer;
use obo_core::token_response::MAX_TOKEN_RESPONSE_BYTES;

use crate::abi::{CalloutResult, EnvoyBuffer, EnvoyHeader};

/// The answer; a reset (or an answer past Envoy's buffer limit) has no status.
///
/// # Safety
/// `headers` and `chunks` point to `headers_size` and `chunks_size` items (or are null), valid
/// until the done hook that received them returns; all of it is copied before this returns.
pub unsafe fn read(
    result: CalloutResult,
    headers: *const EnvoyHeader,
    headers_size: usize,
    chunks: *const EnvoyBuffer,
    chunks_size: usize,
) -> CallAnswer {
    if result != CalloutResult::SUCCESS || headers.is_null() {
        return CallAnswer::default();
    }
    // SAFETY: Envoy's `headers_size` headers, valid during the hook (caller's word).
    let headers = unsafe { std::slice::from_raw_parts(headers, headers_size) };
    let header = |name: &str| {
        headers.iter().find_map(|h| {
            // SAFETY: each header's key and value are Envoy's, valid during the hook.
            let (key, value) = unsafe { h.parts() };
            key.eq_ignore_ascii_case(name.as_bytes())
                .then(|| String::from_utf8_lossy(value).into_owned())
        })
    };
    // One byte past the limit is enough to tell that the answer is too large.
    let mut body = Vec::new();
    if !chunks.is_null() {
        // SAFETY: Envoy's `chunks_size` body chunks, valid during the hook (caller's word).
        for chunk in unsafe { std::slice::from_raw_parts(chunks, chunks_size) } {
            let room = (MAX_TOKEN_RESPONSE_BYTES + 1).saturating_sub(body.len());
            // SAFETY: as above.
            let bytes = unsafe { chunk.bytes() };
            body.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
    }
    CallAnswer {
        status: header(":status").and_then(|s| s.parse().ok()),
        retry_after: header("retry-after"),
        overloaded: header("x-envoy-overloaded").is_some(),
        body,
    }
}
