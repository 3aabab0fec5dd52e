//! peat-sidecar joins the applications on one host to a Peat formation mesh over iroh
//! QUIC, and finds its peers by itself.
//!
//! The crate is laid out by job:
//! - [`config`]: flags and `PEAT_SIDECAR_*` variables;
//! - [`settings`]: the flags checked and turned into per-module settings, before
//!   anything binds;
//! - [`node`]: identity, endpoint, formation check and the peer manager, the one place
//!   that decides whom to dial;
//! - [`discovery`]: sources that report found and lost peers to the peer manager;
//! - [`data`]: the data plane: publish, subscribe and retained state over the
//!   formation's connections;
//! - [`api`]: the gRPC service and the CLI client;
//! - [`daemon`]: `peat-sidecar run`, which wires them together;
//! - [`authority`]: `peat-sidecar authority`, the offline authority's commands;
//! - [`events`]: what the node and the sources tell each other (imported by both; the
//!   node imports nothing from discovery);
//! - [`logfmt`]: human forms of values for text logs;
//! - [`netchange`]: tells iroh when this host's addresses change;
//! - [`ratelimit`]: the token bucket and the rate-limited log;
//! - [`scoped`]: IPv6 zone ids (`%eth0`, `%2`) in addresses;
//! - [`trust`]: member certificates and revocations from an offline authority
//!   (below [`node`], which checks them in the formation check).

pub mod api;
pub mod authority;
pub mod config;
pub mod daemon;
pub mod data;
pub mod discovery;
pub mod events;
pub mod logfmt;
pub mod netchange;
pub mod node;
pub mod notify;
pub mod ratelimit;
pub mod scoped;
pub mod settings;
pub mod trust;
