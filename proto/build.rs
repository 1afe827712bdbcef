//! Compiles the `.proto` files with the protoc shipped by `protoc-bin-vendored`, so a fresh
//! machine needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    unsafe_env_set(&protoc);
    // One file nesting the generated modules as the packages are (`baton::worker::v1`, …),
    // so cross-package references resolve.
    // Registry credentials print redacted (`src/lib.rs`), so no log line can hold a password.
    tonic_prost_build::configure()
        .include_file("packages.rs")
        .skip_debug([
            "baton.worker.v1.RegistryCredentials",
            "baton.shard.v1.PutRegistryCredentialsRequest",
            "baton.shard.v1.RegistryCredentialsResponse",
        ])
        .compile_protos(
            &["proto/worker.proto", "proto/cell_control.proto", "proto/raft.proto", "proto/shard_manager.proto"],
            &["proto"],
        )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}

#[allow(unsafe_code)]
fn unsafe_env_set(protoc: &std::path::Path) {
    // SAFETY: the build script has no other threads that could read the environment.
    unsafe { std::env::set_var("PROTOC", protoc) };
}
