//! Compiles proto/sidecar.proto with a protoc shipped as a crate, so that a fresh
//! machine needs no protobuf compiler from its package manager.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("sidecar_descriptor.bin"))
        // Undecodable requests answer INVALID_ARGUMENT (src/api/codec.rs).
        .codec_path("crate::api::codec::SidecarCodec")
        // Payloads as bytes::Bytes: a request's payload is a slice of the received
        // buffer, and one delivered message's payload is shared by every subscriber
        // instead of copied per delivery.
        .bytes(".")
        .compile_protos(&["proto/sidecar.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/sidecar.proto");
    build_info();
    Ok(())
}

/// The target triple and the git commit, for the metrics' `build_info` (a build from
/// a source tarball, without git, says "unknown").
fn build_info() {
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=PEAT_BUILD_TARGET={target}");
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=PEAT_BUILD_COMMIT={commit}");
    // A new commit moves HEAD or the branch it names.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        println!("cargo:rerun-if-changed={dir}/HEAD");
        println!("cargo:rerun-if-changed={dir}/refs/heads");
    }
}
