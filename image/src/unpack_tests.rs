use std::io::Write;
use std::os::unix::fs::MetadataExt;

use super::*;

/// One tar entry, its name and link target written as raw bytes (as a hostile layer would
/// be, past the checks a tar writer makes).
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8], u32),
    Symlink(&'a str, &'a str),
    Link(&'a str, &'a str),
    Fifo(&'a str),
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let (name, kind, data, mode, link): (&str, tar::EntryType, &[u8], u32, &str) = match entry {
            E::Dir(n) => (n, tar::EntryType::Directory, b"", 0o755, ""),
            E::File(n, data, mode) => (n, tar::EntryType::Regular, data, *mode, ""),
            E::Symlink(n, to) => (n, tar::EntryType::Symlink, b"", 0o777, to),
            E::Link(n, to) => (n, tar::EntryType::Link, b"", 0o644, to),
            E::Fifo(n) => (n, tar::EntryType::Fifo, b"", 0o644, ""),
        };
        let gnu = header.as_gnu_mut().unwrap();
        gnu.name[..name.len()].copy_from_slice(name.as_bytes());
        gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A folder with `root` (the image's rootfs) and, beside it, `outside`, which no layer may
/// touch.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("root")).unwrap();
        fs::create_dir(dir.path().join("outside")).unwrap();
        Self { dir }
    }
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn outside(&self) -> PathBuf {
        self.dir.path().join("outside")
    }
    fn apply(&self, entries: &[E]) -> Result<Applied, UnpackError> {
        apply_layer(&tar_of(entries)[..], Compression::None, &self.root())
    }
    fn outside_is_untouched(&self) {
        assert_eq!(fs::read_dir(self.outside()).unwrap().count(), 0, "nothing was written outside the root");
        assert!(fs::symlink_metadata(self.dir.path().join("evil")).is_err(), "nothing beside the root either");
    }
}

#[test]
fn a_layer_makes_files_folders_symlinks_and_links_with_their_modes() {
    let world = World::new();
    let layer = gzip(&tar_of(&[
        E::Dir("usr/"),
        E::Dir("usr/bin/"),
        E::File("usr/bin/app", b"#!/bin/sh\n", 0o755),
        E::File("/etc/config", b"x=1", 0o600),
        E::File("./etc/other", b"y", 0o644),
        E::Symlink("bin", "/usr/bin"),
        E::Symlink("usr/bin/sh", "busybox"),
        E::Link("usr/bin/app2", "usr/bin/app"),
        E::Fifo("run/fifo"),
    ]));
    let applied = apply_layer(&layer[..], Compression::Gzip, &world.root()).unwrap();
    assert_eq!(applied, Applied { entries: 8, removed: 0, skipped: 1 });
    let root = world.root();
    assert_eq!(fs::read(root.join("usr/bin/app")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(fs::metadata(root.join("usr/bin/app")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::metadata(root.join("etc/config")).unwrap().mode() & 0o7777, 0o600, "an absolute path lands inside");
    assert_eq!(fs::read_link(root.join("bin")).unwrap(), Path::new("/usr/bin"), "symlinks are kept as given");
    assert_eq!(fs::read_link(root.join("usr/bin/sh")).unwrap(), Path::new("busybox"));
    let (a, b) = (fs::metadata(root.join("usr/bin/app")).unwrap(), fs::metadata(root.join("usr/bin/app2")).unwrap());
    assert_eq!(a.ino(), b.ino(), "a hard link");
    assert!(fs::symlink_metadata(root.join("run/fifo")).is_err(), "no FIFO");
}

#[test]
fn whiteouts_remove_lower_files_and_opaque_folders_hide_lower_contents() {
    let world = World::new();
    world
        .apply(&[
            E::File("a/keep", b"1", 0o644),
            E::File("a/gone", b"2", 0o644),
            E::Dir("b/"),
            E::File("b/lower1", b"3", 0o644),
            E::Dir("b/lower-dir/"),
            E::File("b/lower-dir/x", b"4", 0o644),
            E::Symlink("c", "/a/keep"),
        ])
        .unwrap();
    let applied = world
        .apply(&[
            E::File("a/.wh.gone", b"", 0o644),
            E::Dir("b/"),
            E::File("b/upper", b"5", 0o644),
            E::File("b/.wh..wh..opq", b"", 0o644),
            E::File(".wh.c", b"", 0o644),
        ])
        .unwrap();
    let root = world.root();
    assert!(root.join("a/keep").exists() && !root.join("a/gone").exists());
    let mut b: Vec<String> =
        fs::read_dir(root.join("b")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    b.sort();
    assert_eq!(b, ["upper"], "the opaque folder keeps this layer's entries only");
    assert!(fs::symlink_metadata(root.join("c")).is_err(), "a whited-out symlink goes, not its target");
    assert!(root.join("a/keep").exists());
    assert_eq!(applied.removed, 4);
}

#[test]
fn a_parent_folder_escape_is_refused() {
    for name in ["../evil", "a/../../evil", "./../evil", "/../evil"] {
        let world = World::new();
        let err = world.apply(&[E::File(name, b"pwned", 0o644)]).unwrap_err();
        assert!(matches!(err, UnpackError::Escapes(_)), "{name}: {err}");
        world.outside_is_untouched();
    }
}

#[test]
fn writing_through_a_symlink_is_refused_wherever_it_points() {
    let world = World::new();
    let outside = world.outside().display().to_string();
    // An absolute symlink to a folder outside, then a file under it.
    let err = world.apply(&[E::Symlink("link", &outside), E::File("link/pwned", b"x", 0o644)]).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink(_)), "{err}");
    world.outside_is_untouched();
    // A relative one that climbs out, in a later layer than the symlink.
    let world = World::new();
    world.apply(&[E::Symlink("up", "../outside")]).unwrap();
    let err = world.apply(&[E::File("up/pwned", b"x", 0o644)]).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink(_)), "{err}");
    world.outside_is_untouched();
    // A folder entry of that name replaces the symlink itself: what follows lands inside.
    world.apply(&[E::Dir("up/"), E::File("up/file", b"x", 0o644)]).unwrap();
    assert!(fs::symlink_metadata(world.root().join("up")).unwrap().is_dir());
    assert!(world.root().join("up/file").exists());
    world.outside_is_untouched();
    // A whiteout through a symlink removes nothing outside.
    let world = World::new();
    fs::write(world.outside().join("victim"), b"v").unwrap();
    let err = world.apply(&[E::Symlink("link", &outside), E::File("link/.wh.victim", b"", 0o644)]).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink(_)), "{err}");
    assert!(world.outside().join("victim").exists());
}

#[test]
fn a_hard_link_must_point_at_a_file_in_the_image() {
    let world = World::new();
    fs::write(world.outside().join("secret"), b"s").unwrap();
    for target in ["../outside/secret", "/../outside/secret", "nothing/here"] {
        let err = world.apply(&[E::Link("stolen", target)]).unwrap_err();
        assert!(matches!(err, UnpackError::BadLink { .. }), "{target}: {err}");
    }
    let outside = world.outside().display().to_string();
    let err = world.apply(&[E::Symlink("link", &outside), E::Link("stolen", "link/secret")]).unwrap_err();
    assert!(matches!(err, UnpackError::BadLink { .. }), "through a symlink: {err}");
    assert!(fs::symlink_metadata(world.root().join("stolen")).is_err());
    assert_eq!(fs::metadata(world.outside().join("secret")).unwrap().nlink(), 1, "no link to the outside file");
}

#[test]
fn a_zstd_layer_unpacks_and_an_image_appears_only_whole() {
    let dir = tempfile::tempdir().unwrap();
    let zstd_layer = zstd::encode_all(&tar_of(&[E::File("app", b"zstd!", 0o755)])[..], 3).unwrap();
    let dest = dir.path().join("sha256-abc");
    let layers = vec![(&zstd_layer[..], Compression::Zstd)];
    unpack_image(layers, &dest).unwrap();
    assert_eq!(fs::read(dest.join("app")).unwrap(), b"zstd!");

    // A bad second layer: no rootfs, and no partial folder left behind.
    let good = tar_of(&[E::File("app", b"1", 0o755)]);
    let bad = tar_of(&[E::File("../evil", b"x", 0o644)]);
    let dest = dir.path().join("sha256-def");
    let layers = vec![(&good[..], Compression::None), (&bad[..], Compression::None)];
    assert!(matches!(unpack_image(layers, &dest), Err(UnpackError::Escapes(_))));
    let left: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, [std::ffi::OsString::from("sha256-abc")], "only the whole image: {left:?}");
    // A truncated gzip stream is an error too, not a half layer.
    let cut = gzip(&tar_of(&[E::File("big", &[7u8; 100_000], 0o644)]));
    let dest = dir.path().join("sha256-cut");
    assert!(unpack_image(vec![(&cut[..cut.len() / 2], Compression::Gzip)], &dest).is_err());
    assert!(!dest.exists());
}

#[test]
fn media_types_name_their_compression() {
    assert_eq!(Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+gzip"), Some(Compression::Gzip));
    assert_eq!(Compression::of_media_type("application/vnd.oci.image.layer.v1.tar+zstd"), Some(Compression::Zstd));
    assert_eq!(
        Compression::of_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip"),
        Some(Compression::Gzip)
    );
    assert_eq!(Compression::of_media_type("application/vnd.oci.image.layer.v1.tar"), Some(Compression::None));
    assert_eq!(Compression::of_media_type("application/vnd.oci.image.config.v1+json"), None);
}
