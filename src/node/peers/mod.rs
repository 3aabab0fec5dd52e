//! The peer manager: the one place that decides whom to dial.
//!
//! Its inputs are static peers, the ConnectPeer/DisconnectPeer RPCs, discovery events,
//! finished dials, authenticated incoming connections and closed connections. It
//!
//! - keeps one connection per peer and one dial in flight per peer;
//! - settles simultaneous dials deterministically: the smaller id decides, the other
//!   side keeps both until it has (see `dups.rs`, [`rules::survivor`]);
//! - dials in parallel, up to `--max-concurrent-dials`, and never dials itself;
//! - redials every known peer after a loss, with exponential backoff and jitter;
//! - keeps a bounded table of peers with state, sources, addresses, last error, RTT.
//!
//! It is split in two. The *core* ([`core`], with [`schedule`] and [`links`]) is a pure
//! state machine, `handle(input, now) -> actions`, over a table of [`row::Peer`]s, each
//! with a [`row::Link`] state; it does no I/O and is unit-tested in `tests.rs`. The
//! *driver* ([`driver::PeerManager`]) is the task around it: it owns the command
//! channel, the connections and the callers' reply channels, and carries out the
//! actions (dials and connection watchers run in their own tasks and report back
//! through the channel, so a slow peer never blocks the others).
//!
//! Modules: `types` (what the API sees, limits, counters), `rules` (survivor, dial
//! delays, close meanings), `row` (a table row), `dead` (dead-address memory), `evict`
//! (who goes when the table is full), `fair` (address ranges' turns among unproven
//! peers), `core`/`schedule`/`links`/`dups` (decisions), `driver` and `dial` (I/O),
//! `handle` (the channel's client side).

mod core;
mod dead;
mod dial;
mod driver;
mod dups;
mod evict;
mod fair;
mod handle;
mod links;
mod row;
pub mod rules;
mod schedule;
mod types;

#[cfg(test)]
mod tests;

pub use driver::PeerManager;
pub use handle::{Command, PeerManagerHandle};
pub use types::{
    handshake_outcome, Counters, DialError, Limits, PeerInfo, PeerState, RequestError,
    DIAL_FAILURE_REASONS, HANDSHAKE_OUTCOMES,
};
pub(crate) use types::{GaugeGuard, TaskGuard};
