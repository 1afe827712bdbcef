//! Making small images without a container engine, for `baton up`'s sample and for tests:
//! a program and the shared libraries it loads packed into a layer, pushed with an image
//! config to any registry.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use oci_client::Reference;
use oci_client::client::{Config, ImageLayer};

use crate::resolve::{Credentials, ResolveError, ResolverSettings, classify, client_for};

/// One file of a layer: where it goes in the image, where it is on this machine.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LayerFile {
    /// Absolute path inside the image.
    pub path: String,
    /// The file to copy.
    pub source: PathBuf,
}

/// `program` at `at` in the image, with every shared library `ldd` says it loads at the
/// library's own path (nothing more for a static program).
pub fn program_with_libraries(program: &Path, at: &str) -> std::io::Result<Vec<LayerFile>> {
    let mut files = BTreeSet::from([LayerFile { path: at.to_string(), source: program.to_path_buf() }]);
    let output = std::process::Command::new("ldd").arg(program).output()?;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x…)" or "/lib64/ld-linux-x86-64.so.2 (0x…)".
        let path = line.split("=>").last().unwrap_or_default().split_whitespace().next().unwrap_or_default();
        if path.starts_with('/') {
            files.insert(LayerFile { path: path.to_string(), source: PathBuf::from(path) });
        }
    }
    Ok(files.into_iter().collect())
}

/// A gzip-compressed tar layer holding `files` (mode 0755, owned by root) and the folders
/// above them.
pub fn layer(files: &[LayerFile]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut folders = BTreeSet::new();
    for file in files {
        let inside = file.path.trim_start_matches('/');
        for folder in Path::new(inside).ancestors().skip(1).filter(|f| !f.as_os_str().is_empty()) {
            folders.insert(folder.to_path_buf());
        }
    }
    for folder in &folders {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        tar.append_data(&mut header, folder, std::io::empty())?;
    }
    for file in files {
        let data = std::fs::read(&file.source)?;
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o755);
        header.set_size(data.len() as u64);
        tar.append_data(&mut header, file.path.trim_start_matches('/'), data.as_slice())?;
    }
    let tar = tar.into_inner()?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar)?;
    gz.finish()
}

/// How an image says to run it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env`, as `NAME=value`.
    pub env: Vec<String>,
    /// `ExposedPorts` (TCP).
    pub exposed_ports: Vec<u16>,
    /// `User`; empty: not said.
    pub user: String,
}

/// Pushes a linux/amd64 image of `layers` (gzip tars, bottom first) run as `run` to
/// `reference`; returns its manifest digest.
pub async fn push(
    reference: &str,
    layers: Vec<Vec<u8>>,
    run: &RunConfig,
    credentials: &Credentials,
    settings: &ResolverSettings,
) -> Result<String, ResolveError> {
    let parsed: Reference = reference.parse().map_err(|_| ResolveError::BadReference(reference.to_string()))?;
    let registry = parsed.resolve_registry().to_string();
    let client = client_for(&registry, settings);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": run.entrypoint,
            "Cmd": run.cmd,
            "Env": run.env,
            "User": run.user,
            "ExposedPorts": run.exposed_ports.iter().map(|p| (format!("{p}/tcp"), serde_json::json!({}))).collect::<serde_json::Map<_, _>>(),
        },
        "rootfs": {"type": "layers", "diff_ids": []},
    });
    let layers: Vec<ImageLayer> = layers.into_iter().map(|l| ImageLayer::oci_v1_gzip(l, None)).collect();
    let config = Config::oci_v1(serde_json::to_vec(&config).expect("JSON of JSON"), None);
    let auth = credentials.auth();
    client.push(&parsed, &layers, config, &auth, None).await.map_err(|e| classify(e, &registry, &parsed))?;
    client.fetch_manifest_digest(&parsed, &auth).await.map_err(|e| classify(e, &registry, &parsed))
}
