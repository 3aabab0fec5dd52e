//! The kernel's neighbour (ARP/NDP) table limits, raised for large LANs.
//!
//! The neighbour tables are shared by all network namespaces, and their size limits
//! (`net.ipv4.neigh.default.gc_thresh1/2/3`, and the same for IPv6) are global. Every
//! host of a full mesh of N learns the link-layer address of the N-1 others, over IPv4
//! and over IPv6: N(N-1) entries per family, 2450 at N = 50. The usual defaults
//! (128/512/1024) then make the kernel drop entries ("neighbor table overflow" in
//! dmesg), and dials fail for reasons that have nothing to do with the sidecar.
//!
//! [`NeighLimits::raise_for`] raises the limits (never lowers them) for a LAN of N and
//! puts the previous values back when dropped: at the end of the run, and also when
//! a scenario fails, panics or times out (the guard outlives the scenarios).

use std::path::PathBuf;

const FAMILIES: [&str; 2] = ["ipv4", "ipv6"];
const KNOBS: [&str; 3] = ["gc_thresh1", "gc_thresh2", "gc_thresh3"];

fn knob(family: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("/proc/sys/net/{family}/neigh/default/{name}"))
}

fn read(path: &PathBuf) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The limits wanted for a LAN of `n` hosts: `[thresh1, thresh2, thresh3]`. thresh1
/// (no garbage collection below it) covers the mesh itself; the hard limit leaves
/// room for whatever else the machine runs (tests, other namespaces, stale entries of
/// the previous round).
pub fn wanted(n: usize) -> [u64; 3] {
    let mesh = (n * n.saturating_sub(1)) as u64;
    [mesh.max(128), (2 * mesh).max(512), (4 * mesh).max(1024)]
}

/// Previous values of the knobs this guard changed; put back on drop.
#[must_use = "the limits are restored when the guard is dropped"]
pub struct NeighLimits {
    restore: Vec<(PathBuf, u64)>,
}

impl NeighLimits {
    /// Raises each limit that is below [`wanted`]`(n)`; leaves higher ones alone.
    pub fn raise_for(n: usize) -> anyhow::Result<Self> {
        let want = wanted(n);
        let mut guard = NeighLimits { restore: vec![] };
        for family in FAMILIES {
            // thresh3 first when raising: the kernel does not insist on the order,
            // but a reader in between then never sees thresh1 > thresh3.
            for (i, name) in KNOBS.iter().enumerate().rev() {
                let path = knob(family, name);
                let Some(old) = read(&path) else {
                    // No IPv6 on this kernel: nothing to raise there.
                    continue;
                };
                if old >= want[i] {
                    continue;
                }
                std::fs::write(&path, want[i].to_string()).map_err(|e| {
                    anyhow::anyhow!("cannot raise {} to {}: {e}", path.display(), want[i])
                })?;
                eprintln!(
                    "neighbour table: {} {old} -> {} for N = {n} (restored at the end)",
                    path.display(),
                    want[i]
                );
                guard.restore.push((path, old));
            }
        }
        Ok(guard)
    }
}

impl Drop for NeighLimits {
    fn drop(&mut self) {
        // Reverse order: thresh1 back down before thresh3.
        for (path, old) in self.restore.iter().rev() {
            match std::fs::write(path, old.to_string()) {
                Ok(()) => eprintln!("neighbour table: {} restored to {old}", path.display()),
                Err(e) => eprintln!(
                    "neighbour table: cannot restore {} to {old}: {e}",
                    path.display()
                ),
            }
        }
    }
}
