//! Unpacking image layers into a rootfs, refusing any layer that would write outside it.
//!
//! A layer is a tar stream (plain, gzip or zstd) applied over the layers before it:
//! entries are created, replaced or (by whiteouts) removed. Nothing a layer holds is
//! trusted: an entry with a `..` component, an entry whose path runs through a symlink
//! (a symlink to `/etc` followed by `link/passwd`), or a hard link to a path that does, is
//! refused, and the whole image with it. Symlinks themselves are created as given and
//! never followed here: at run time they resolve inside the container's root. Device
//! nodes and FIFOs are skipped (a sandbox may not use them). [`unpack_image`] writes into
//! a folder of its own and renames it into place only when every layer applied, so a
//! half-unpacked rootfs is never seen.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Plain tar.
    None,
    /// gzip.
    Gzip,
    /// zstd.
    Zstd,
}

impl Compression {
    /// The compression a layer's media type names (OCI and Docker's), if it is a layer.
    pub fn of_media_type(media_type: &str) -> Option<Self> {
        match media_type {
            "application/vnd.oci.image.layer.v1.tar" | "application/vnd.docker.image.rootfs.diff.tar" => {
                Some(Compression::None)
            }
            "application/vnd.oci.image.layer.v1.tar+gzip" | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
                Some(Compression::Gzip)
            }
            "application/vnd.oci.image.layer.v1.tar+zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }
}

/// Why a layer was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry's path leaves the rootfs (`..`).
    #[error("layer entry {0:?} leaves the image's root")]
    Escapes(String),
    /// An entry's path runs through a symlink.
    #[error("layer entry {0:?} runs through a symlink")]
    ThroughSymlink(String),
    /// A hard link to something the rootfs does not hold.
    #[error("layer entry {path:?} links to {target:?}, which is not in the image")]
    BadLink {
        /// The entry.
        path: String,
        /// Its target.
        target: String,
    },
    /// Reading, decompressing or writing failed.
    #[error("unpacking a layer: {0}")]
    Io(#[from] io::Error),
}

/// What one layer did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// Entries created or replaced.
    pub entries: u64,
    /// Paths whiteouts removed.
    pub removed: u64,
    /// Device nodes and FIFOs left out.
    pub skipped: u64,
}

/// Applies every layer, in order, to a new rootfs at `dest` (which must not exist): into
/// a sibling folder first, renamed to `dest` once all applied; on any error that folder
/// is removed and `dest` never appears.
pub fn unpack_image<R: Read>(layers: Vec<(R, Compression)>, dest: &Path) -> Result<Applied, UnpackError> {
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let partial = dest.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial)?;
    let mut total = Applied::default();
    let applied = layers.into_iter().try_for_each(|(layer, compression)| {
        let one = apply_layer(layer, compression, &partial)?;
        total.entries += one.entries;
        total.removed += one.removed;
        total.skipped += one.skipped;
        Ok::<_, UnpackError>(())
    });
    match applied.and_then(|()| fs::rename(&partial, dest).map_err(UnpackError::from)) {
        Ok(()) => Ok(total),
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

/// Applies one layer to `rootfs` (the layers before it already there).
pub fn apply_layer<R: Read>(layer: R, compression: Compression, rootfs: &Path) -> Result<Applied, UnpackError> {
    match compression {
        Compression::None => apply_tar(layer, rootfs),
        Compression::Gzip => apply_tar(flate2::read::GzDecoder::new(layer), rootfs),
        Compression::Zstd => apply_tar(zstd::stream::read::Decoder::new(layer)?, rootfs),
    }
}

fn apply_tar<R: Read>(stream: R, rootfs: &Path) -> Result<Applied, UnpackError> {
    let mut archive = tar::Archive::new(stream);
    let mut applied = Applied::default();
    // What this layer wrote: an opaque whiteout hides the layers below, not these.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let relative = inside(&raw)?;
        let Some(file_name) = relative.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue; // the root itself
        };
        let parent = relative.parent().unwrap_or(Path::new(""));
        let parent_dir = directory(rootfs, parent, &raw)?;
        if file_name == ".wh..wh..opq" {
            for child in fs::read_dir(&parent_dir)? {
                let child = child?;
                if !written.contains(&parent.join(child.file_name())) {
                    remove(&child.path())?;
                    applied.removed += 1;
                }
            }
            continue;
        }
        if let Some(hidden) = file_name.strip_prefix(".wh.") {
            let target = parent_dir.join(hidden);
            if fs::symlink_metadata(&target).is_ok() {
                remove(&target)?;
                applied.removed += 1;
            }
            continue;
        }
        let target = parent_dir.join(&file_name);
        let kind = entry.header().entry_type();
        let mode = entry.header().mode().unwrap_or(0o644) & 0o7777;
        let existing = fs::symlink_metadata(&target).ok();
        match kind {
            tar::EntryType::Directory => {
                if existing.as_ref().is_some_and(|m| !m.is_dir()) {
                    remove(&target)?;
                }
                if !target.is_dir() {
                    fs::create_dir(&target)?;
                }
                fs::set_permissions(&target, fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if existing.is_some() {
                    remove(&target)?;
                }
                let mut file = fs::File::create_new(&target)?;
                io::copy(&mut entry, &mut file)?;
                file.set_permissions(fs::Permissions::from_mode(mode))?;
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name()?
                    .ok_or_else(|| io::Error::other(format!("{raw:?}: a symlink without a target")))?;
                if existing.is_some() {
                    remove(&target)?;
                }
                symlink(&*link, &target)?;
            }
            tar::EntryType::Link => {
                let link =
                    entry.link_name_bytes().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
                let source_relative =
                    inside(&link).map_err(|_| UnpackError::BadLink { path: raw.clone(), target: link.clone() })?;
                let source_parent = source_relative.parent().unwrap_or(Path::new(""));
                let source_dir = directory(rootfs, source_parent, &link)
                    .map_err(|_| UnpackError::BadLink { path: raw.clone(), target: link.clone() })?;
                let source = match source_relative.file_name() {
                    Some(name) => source_dir.join(name),
                    None => return Err(UnpackError::BadLink { path: raw, target: link }),
                };
                if fs::symlink_metadata(&source).is_err() {
                    return Err(UnpackError::BadLink { path: raw, target: link });
                }
                if existing.is_some() {
                    remove(&target)?;
                }
                // link(2) does not follow a symlink source: the link is to the symlink.
                fs::hard_link(&source, &target)?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                applied.skipped += 1;
                continue;
            }
            // pax and GNU long-name records are read by the archive itself; anything
            // else carries no file.
            _ => continue,
        }
        written.insert(relative);
        applied.entries += 1;
    }
    Ok(applied)
}

/// An entry's path as a path inside the rootfs: leading `/` and `.` dropped, any `..`
/// refused.
fn inside(raw: &str) -> Result<PathBuf, UnpackError> {
    let mut relative = PathBuf::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return Err(UnpackError::Escapes(raw.to_string())),
        }
    }
    Ok(relative)
}

/// `rootfs/parent` as a real folder: each component created when missing, and none of them
/// a symlink (or anything but a folder).
fn directory(rootfs: &Path, parent: &Path, raw: &str) -> Result<PathBuf, UnpackError> {
    let mut at = rootfs.to_path_buf();
    for component in parent.components() {
        at.push(component);
        match fs::symlink_metadata(&at) {
            Ok(meta) if meta.file_type().is_symlink() => return Err(UnpackError::ThroughSymlink(raw.to_string())),
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                // A file where a folder must be: a later layer replaces it.
                fs::remove_file(&at)?;
                fs::create_dir(&at)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&at)?,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(at)
}

/// Removes a file, symlink (not its target) or folder with its contents.
fn remove(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
