//! The image archive is what Istio pulls: one layer holding only `plugin.wasm`, every blob named
//! by its digest, and the same bytes on every build.

use std::collections::HashMap;
use std::io::Read;

use serde_json::Value;
use wasm_image::{pack, sha256_hex, LAYER_MEDIA_TYPE, MANIFEST_MEDIA_TYPE};

const MODULE: &[u8] = b"\0asm\x01\0\0\0 a module stands in here";

/// Every file in a tar, by path.
fn files_in(tar_bytes: &[u8]) -> HashMap<String, Vec<u8>> {
    let mut archive = tar::Archive::new(tar_bytes);
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut bytes = Vec::new();
            entry.read_to_end(&mut bytes).unwrap();
            (path, bytes)
        })
        .collect()
}

// A native test of the image's files, outside the .wasm (this crate does not depend on the filter).
#[allow(clippy::disallowed_methods)]
fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes).unwrap()
}

fn blob<'a>(files: &'a HashMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").unwrap();
    let bytes = &files[&format!("blobs/sha256/{hex}")];
    assert_eq!(sha256_hex(bytes), hex, "blob named by another digest");
    bytes
}

#[test]
fn archive_holds_one_layer_with_only_plugin_wasm() {
    let packed = pack(MODULE, "entra-obo-filter:1.2.3").unwrap();
    let files = files_in(&packed.archive);
    assert_eq!(json(&files["oci-layout"])["imageLayoutVersion"], "1.0.0");
    let index = json(&files["index.json"]);
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().unwrap().len(), 1);
    assert_eq!(entry["mediaType"], MANIFEST_MEDIA_TYPE);
    assert_eq!(
        entry["annotations"]["org.opencontainers.image.ref.name"],
        "entra-obo-filter:1.2.3"
    );
    assert_eq!(entry["digest"], packed.manifest_digest.as_str());
    let manifest = json(blob(&files, entry["digest"].as_str().unwrap()));
    assert_eq!(
        manifest["annotations"]["module.wasm.image/variant"],
        "compat"
    );
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1, "Istio takes exactly one layer");
    assert_eq!(layers[0]["mediaType"], LAYER_MEDIA_TYPE);
    let layer_gz = blob(&files, layers[0]["digest"].as_str().unwrap());
    assert_eq!(layers[0]["size"], layer_gz.len());
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(layer_gz)
        .read_to_end(&mut layer_tar)
        .unwrap();
    let layer = files_in(&layer_tar);
    assert_eq!(layer.keys().collect::<Vec<_>>(), vec!["plugin.wasm"]);
    assert_eq!(layer["plugin.wasm"], MODULE);
    let config = json(blob(&files, manifest["config"]["digest"].as_str().unwrap()));
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        format!("sha256:{}", sha256_hex(&layer_tar))
    );
    // Docker's manifest.json names the same blobs, for `docker load` and `crane push`.
    let docker = json(&files["manifest.json"]);
    assert_eq!(docker[0]["RepoTags"][0], "entra-obo-filter:1.2.3");
    assert!(files.contains_key(docker[0]["Config"].as_str().unwrap()));
    assert!(files.contains_key(docker[0]["Layers"][0].as_str().unwrap()));
    assert_eq!(
        packed.module_digest,
        format!("sha256:{}", sha256_hex(MODULE))
    );
}

#[test]
fn the_same_module_packs_to_the_same_bytes() {
    let a = pack(MODULE, "x:1").unwrap();
    let b = pack(MODULE, "x:1").unwrap();
    assert_eq!(a, b);
    let other = pack(b"\0asm\x01\0\0\0 another", "x:1").unwrap();
    assert_ne!(a.manifest_digest, other.manifest_digest);
}

#[test]
fn dockerfile_builds_the_same_layout() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../envoy/Dockerfile");
    let text = std::fs::read_to_string(path).unwrap();
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(instructions, ["FROM scratch", "COPY plugin.wasm ./"]);
}
