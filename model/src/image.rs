//! The shape of image references and digests in a spec. Whether a reference names a real
//! image is the registry's to say, at registration (`baton-image`); here only what no
//! registry could accept is refused, before any network call.

use crate::function::SpecError;

/// Longest image reference, in bytes (the distribution spec's repository names stay under
/// 256; a registry host, tag and digest fit in the rest).
pub const MAX_REFERENCE_BYTES: usize = 512;

/// Checks an image reference: visible ASCII without spaces, at most
/// [`MAX_REFERENCE_BYTES`], not starting with `-` or `/`, and naming a repository.
pub fn check_reference(reference: &str) -> Result<(), SpecError> {
    let refuse = |why: &str| Err(SpecError::new("image", format!("{:?} {why}", short(reference))));
    if reference.is_empty() {
        return refuse("is empty");
    }
    if reference.len() > MAX_REFERENCE_BYTES {
        return refuse(&format!("is longer than {MAX_REFERENCE_BYTES} bytes"));
    }
    if !reference.bytes().all(|b| b.is_ascii_graphic()) {
        return refuse("must be visible ASCII without spaces");
    }
    if reference.starts_with(['-', '/', ':', '@']) || reference.ends_with(['/', ':', '@']) {
        return refuse("is not an image reference such as registry.example:5000/acme/hello:1.2");
    }
    if let Some((_, digest)) = reference.split_once('@') {
        check_digest(digest).map_err(|e| SpecError::new("image", e.message))?;
    }
    Ok(())
}

/// Checks a manifest digest: `sha256:` and 64 lowercase hex digits.
pub fn check_digest(digest: &str) -> Result<(), SpecError> {
    let hex = digest.strip_prefix("sha256:").unwrap_or_default();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(SpecError::new(
            "image_digest",
            format!("{:?} is not a digest (sha256: and 64 lowercase hex digits)", short(digest)),
        ));
    }
    Ok(())
}

/// Docker Hub's canonical name: what `docker.io`, `index.docker.io`,
/// `registry-1.docker.io` and references without a registry all name.
pub const DOCKER_HUB: &str = "docker.io";

/// The registry `reference` pulls from, as credentials are filed under it: its first
/// part when that names a host (it holds a `.` or a `:`, or is `localhost`), else Docker
/// Hub; lowercase, Docker Hub's names folded into [`DOCKER_HUB`].
pub fn registry_of(reference: &str) -> String {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => normalize_registry(first),
        _ => DOCKER_HUB.to_string(),
    }
}

/// A registry's name as credentials are filed under it (see [`registry_of`]).
pub fn normalize_registry(registry: &str) -> String {
    let lower = registry.to_ascii_lowercase();
    match lower.as_str() {
        "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB.to_string(),
        _ => lower,
    }
}

/// Checks a registry name given for credentials: a host, optionally with a port, as an
/// image reference's first part.
pub fn check_registry(registry: &str) -> Result<(), SpecError> {
    let (host, port) = match registry.rsplit_once(':') {
        Some((host, port)) if !host.contains(']') || host.ends_with(']') => (host, Some(port)),
        _ => (registry, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'))
        && !host.starts_with(['-', '.']);
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    if host_ok && port_ok {
        Ok(())
    } else {
        Err(SpecError::new(
            "registry",
            format!("{:?} is not a registry host such as ghcr.io or 10.0.0.5:5000", short(registry)),
        ))
    }
}

fn short(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_filed_under_the_registry_a_reference_pulls_from() {
        for (reference, registry) in [
            ("alpine", "docker.io"),
            ("library/alpine:3", "docker.io"),
            ("acme/app:1", "docker.io"),
            ("docker.io/acme/app", "docker.io"),
            ("Index.Docker.io/acme/app", "docker.io"),
            ("ghcr.io/acme/app:1", "ghcr.io"),
            ("127.0.0.1:5000/acme/app@sha256:00", "127.0.0.1:5000"),
            ("localhost/app", "localhost"),
            ("[::1]:5000/app", "[::1]:5000"),
        ] {
            assert_eq!(registry_of(reference), registry, "{reference}");
        }
        for good in ["ghcr.io", "10.0.0.5:5000", "localhost", "[::1]:5000", "registry-1.docker.io"] {
            assert!(check_registry(good).is_ok(), "{good}");
        }
        for bad in ["", "a/b", "host:0", "host:99999", "-x.io", "a b", "x.io/"] {
            assert!(check_registry(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn references_and_digests_of_a_wrong_shape_are_refused() {
        let digest = format!("sha256:{}", "ab".repeat(32));
        for good in ["hello", "acme/hello:1.2", "127.0.0.1:5000/acme/hello", &format!("r.example/a@{digest}")] {
            assert!(check_reference(good).is_ok(), "{good}");
        }
        for bad in ["", "a b", "-x", "/x", "x/", "x:", "x@", "x@sha256:12", "héllo", &"a".repeat(600)] {
            assert_eq!(check_reference(bad).unwrap_err().field, "image", "{bad}");
        }
        assert!(check_digest(&digest).is_ok());
        for bad in ["sha256:", "md5:00", &format!("sha256:{}", "AB".repeat(32)), &digest[..70]] {
            assert_eq!(check_digest(bad).unwrap_err().field, "image_digest", "{bad}");
        }
    }
}
