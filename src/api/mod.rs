//! The gRPC API (`proto/sidecar.proto`) and its command-line client.

pub mod channel;
pub mod client;
pub mod client_data;
pub mod codec;
pub mod convert;
pub mod data;
pub mod idprefix;
pub mod metrics;
mod metrics_data;
pub mod metrics_iroh;
pub mod output;
pub mod server;
pub mod web;

/// Code generated from `proto/sidecar.proto`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("peat.sidecar.v1");

    /// Descriptor set for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("sidecar_descriptor");
}
