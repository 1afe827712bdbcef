//! Image layers written by hand, for tests: entries named exactly as given (a hostile
//! layer's `..` included, which `tar`'s own path setters refuse), gzip-compressed.

use std::io::Write;

/// A gzip layer of `(path, contents)` files (mode 0755) and `(path, target)` symlinks.
pub fn raw_layer(files: &[(&str, &[u8])], symlinks: &[(&str, &str)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.as_gnu_mut().expect("a GNU header").name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        tar.append(&header, *data).expect("writing to memory");
    }
    for (name, target) in symlinks {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        header.set_mode(0o777);
        tar.append_link(&mut header, name, target).expect("writing to memory");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar.into_inner().expect("writing to memory")).expect("writing to memory");
    gz.finish().expect("writing to memory")
}
