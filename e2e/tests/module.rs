//! The built `.wasm` itself: what it offers Envoy.

use std::collections::BTreeSet;

use obo_e2e::envoy::wasm_path;

/// Envoy calls into the VM only for the callbacks a module exports, so every extra export of the
/// SDK (on_done, on_log, the body callbacks) would cost each request or body chunk a VM call. The
/// build keeps only those listed in wasm/src/exports.json.
#[test]
fn module_exports_only_the_callbacks_the_filter_uses() {
    let listed: serde_json::Value =
        obo_core::json::parse(include_str!("../../wasm/src/exports.json"))
            .expect("wasm/src/exports.json is JSON");
    let listed: BTreeSet<String> = listed
        .as_array()
        .expect("a list of nodes")
        .iter()
        .filter_map(|node| node["export"].as_str().map(str::to_string))
        .collect();
    assert!(listed.contains("proxy_on_request_headers"));

    let module = std::fs::read(wasm_path()).expect("the .wasm");
    let mut exported = BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(&module) {
        if let wasmparser::Payload::ExportSection(reader) = payload.expect("a valid module") {
            for export in reader {
                exported.insert(export.expect("an export").name.to_string());
            }
        }
    }
    assert_eq!(exported, listed);
}

/// The module's budget, for a sidecar in every pod: under 400 KB (issue #4). JSON is read as a
/// tree, never through serde's derived deserializers (clippy.toml), which took 66 KB of it until
/// 2026-11-26. docs/performance.md has where the bytes go.
#[test]
fn module_is_under_400_kb() {
    let size = std::fs::metadata(wasm_path()).expect("the .wasm").len();
    assert!(
        size < 400_000,
        "the .wasm is {size} bytes; see docs/performance.md for where the bytes go"
    );
}
