//! The fixed hash of a function ID. Every component must agree on it forever (it decides
//! ownership and the data plane within a cell), so it is a published algorithm with a
//! fixed seed, pinned by golden values: XXH3-64 (xxHash 0.8) of the ID's UTF-8 bytes,
//! seed 0.

/// The 64-bit hash of function ID `id` (`tenant/name`): XXH3-64, seed 0.
pub fn function_hash(id: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(id.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Golden values: changing them re-shards every deployment.
    #[test]
    fn the_function_hash_never_changes() {
        assert_eq!(function_hash(""), 0x2d06_8005_38d3_94c2);
        assert_eq!(function_hash("acme/echo"), GOLDEN_ACME_ECHO);
        assert_eq!(function_hash("dev/spin"), GOLDEN_DEV_SPIN);
    }

    // Computed with the reference C implementation (Python's `xxhash.xxh3_64`), not with
    // this code.
    const GOLDEN_ACME_ECHO: u64 = 0x0849_a7ff_f7fa_e62c;
    const GOLDEN_DEV_SPIN: u64 = 0x79de_31d4_1cb9_6afe;
}
