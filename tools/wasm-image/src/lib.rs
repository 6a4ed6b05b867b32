//! Packs a proxy-wasm module into an OCI image archive in the layout Istio's `WasmPlugin` pulls
//! (the "compat" variant of the Wasm image spec): one gzip layer holding `plugin.wasm`, as
//! `FROM scratch` + `COPY plugin.wasm ./` would build it. The archive is an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/sha256/…`) that also carries Docker's `manifest.json`, so
//! `skopeo copy oci-archive:…`, `crane push` and `docker load` all take it. Every byte is
//! reproducible: the same module gives the same digests.

use std::io::Write;

use flate2::write::GzEncoder;
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const MODULE_NAME: &str = "plugin.wasm";
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";

/// What was packed, for the release notes and the `WasmPlugin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed {
    /// The archive's bytes.
    pub archive: Vec<u8>,
    /// `sha256:<hex>` of the image manifest: what a registry reports as the image digest, and what
    /// a `WasmPlugin`'s `sha256` (without the `sha256:`) pins for an `oci://` URL.
    pub manifest_digest: String,
    /// `sha256:<hex>` of the module itself (for `http://` and `file://` URLs).
    pub module_digest: String,
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn digest(bytes: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(bytes))
}

/// A tar entry with fixed owner, mode and time, so the layer is the same on every machine.
fn header(path: &str, size: usize, mode: u32) -> std::io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(path)?;
    header.set_size(size as u64);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    Ok(header)
}

fn tar_of(files: &[(&str, &[u8])]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in files {
        builder.append(&header(path, bytes.len(), 0o644)?, *bytes)?;
    }
    builder.into_inner()
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    // No name and time 0 in the gzip header: reproducible.
    let mut encoder: GzEncoder<Vec<u8>> = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    encoder.write_all(bytes)?;
    encoder.finish()
}

fn to_vec(value: &Value) -> Vec<u8> {
    value.to_string().into_bytes()
}

/// Packs `module` as an image named `reference` (`name:tag`).
pub fn pack(module: &[u8], reference: &str) -> std::io::Result<Packed> {
    let layer_tar = tar_of(&[(MODULE_NAME, module)])?;
    let layer = gzip(&layer_tar)?;
    let config = to_vec(&json!({
        "architecture": "wasm",
        "os": "wasip1",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [digest(&layer_tar)]},
        "history": [{"created_by": format!("COPY {MODULE_NAME} ./")}]
    }));
    let manifest = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": digest(&layer), "size": layer.len()}],
        // The Wasm image spec's marker for a standard-layer ("compat") image.
        "annotations": {"module.wasm.image/variant": "compat"}
    }));
    let index = to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE,
            "digest": digest(&manifest),
            "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": reference}
        }]
    }));
    let blob = |bytes: &[u8]| format!("blobs/sha256/{}", sha256_hex(bytes));
    let docker_manifest = to_vec(&json!([{
        "Config": blob(&config),
        "RepoTags": [reference],
        "Layers": [blob(&layer)]
    }]));
    let (config_path, layer_path, manifest_path) = (blob(&config), blob(&layer), blob(&manifest));
    let archive = tar_of(&[
        ("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json", &index),
        ("manifest.json", &docker_manifest),
        (&manifest_path, &manifest),
        (&config_path, &config),
        (&layer_path, &layer),
    ])?;
    Ok(Packed {
        archive,
        manifest_digest: digest(&manifest),
        module_digest: digest(module),
    })
}
