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
        .compile_protos(&["proto/sidecar.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/sidecar.proto");
    Ok(())
}
