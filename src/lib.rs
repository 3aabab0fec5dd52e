//! peat-sidecar joins the applications on one host to a Peat formation mesh over iroh
//! QUIC, and finds its peers by itself.
//!
//! The crate is laid out by job:
//! - [`config`]: flags and `PEAT_SIDECAR_*` variables;
//! - [`node`]: identity, endpoint, formation check and the peer manager, the one place
//!   that decides whom to dial;
//! - [`discovery`]: sources that report found and lost peers to the peer manager;
//! - [`api`]: the gRPC service and the CLI client;
//! - [`daemon`]: `peat-sidecar run`, which wires them together;
//! - [`ratelog`]: rate-limited logging of limits that a hostile network can hit.

pub mod api;
pub mod config;
pub mod daemon;
pub mod discovery;
pub mod node;
pub mod ratelog;
