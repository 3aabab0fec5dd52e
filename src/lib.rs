//! peat-sidecar joins the applications on one host to a Peat formation mesh over iroh
//! QUIC, and finds its peers by itself.
//!
//! The crate is laid out in layers, lowest first; a module imports only from the layers
//! below it, so the module graph is a DAG (`scripts/check-layers.py` holds the table and
//! fails CI on an import that goes up):
//! 1. [`platform`] (the host's network interfaces and their changes), [`scoped`] (IPv6
//!    zone ids in addresses), [`ratelimit`] (the token bucket and the rate-limited log),
//!    [`logfmt`] (human forms of values for text logs), [`trust`] (member certificates
//!    and revocations from an offline authority: their format and checks);
//! 2. [`events`]: what the node and the sources tell each other, so that neither imports
//!    the other's internals; [`netchange`]: tells iroh when this host's addresses change;
//! 3. [`node`]: identity, endpoint, formation check, liveness and the peer manager, the
//!    one place that decides whom to dial; the value types of peers and keys live here,
//!    beside their parsers ([`node::values`]);
//! 4. [`discovery`]: sources that report found and lost peers to the peer manager, and
//!    the settings types each source reads;
//! 5. [`data`]: the data plane: publish, subscribe and retained state over the
//!    formation's connections;
//! 6. [`config`]: flags and `PEAT_SIDECAR_*` variables, with the parsers of the values
//!    that belong to no lower module;
//! 7. [`settings`]: the flags checked and turned into each module's settings before
//!    anything binds; [`api`]: the gRPC service and the CLI client; [`authority`]:
//!    `peat-sidecar authority`, the offline authority's commands;
//! 8. [`notify`]: systemd readiness; then [`daemon`]: `peat-sidecar run`, which wires
//!    them together; then `main`.
//!
//! Nothing below `config` sees the command line: a module defines the settings it reads
//! and `settings` fills them in.

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
pub mod platform;
pub mod ratelimit;
pub mod scoped;
pub mod settings;
pub mod trust;
