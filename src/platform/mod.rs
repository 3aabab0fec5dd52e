//! The host beneath the sidecar: which network interfaces it has and when they change.
//!
//! The lowest layer of the crate: it imports nothing from the other modules, and both
//! the node (beacon sockets join groups per interface) and the discovery sources (mdns
//! follows the interfaces) build on it.

pub mod iface;
