//! A radio channel for test namespaces, where the kernel has no netem: a userspace hub.
//!
//! [`RadioLan::new`] creates N namespaces `PREFIX-0 .. PREFIX-(N-1)`, each with `lo` up
//! and an `eth0` that is a TAP device whose other end is a file descriptor held by a hub
//! thread of the test process. The hub forwards Ethernet frames between its ports like
//! a hub that learns MAC addresses (multicast and unknown destinations go to every other
//! port, so mDNS works), and per receiving port drops a frame with probability `loss`,
//! else delivers it after `delay ± jitter` (uniform): what `netem delay D J loss L` on
//! every port of a bridge would do. Host `i` gets `10.77.0.(i+1)/24`, as in
//! [`super::netns::Lan`].
//!
//! Bandwidth: [`RadioLan::limit_rate`] puts tbf on every `eth0` (tbf works in this
//! kernel). [`RadioLan::set_link`] changes loss and delay while the hub runs.
//! [`RadioLan::stats`] counts frames and bytes per port.
//!
//! Cleanup: `Drop` stops the hub (the TAP devices vanish with its descriptors) and
//! deletes the namespaces; `new` first sweeps namespaces an interrupted run left with
//! the same prefix. Needs root.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    net::Ipv4Addr,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use rand::Rng;

use super::netns::{claim_prefix, mapped_prefix, ns_exec, sh};

/// What the channel does to every frame, per receiving port.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Link {
    /// Probability in [0, 1] that a frame is dropped.
    pub loss: f64,
    /// One-way delay.
    pub delay: Duration,
    /// The delay varies uniformly within ± this.
    pub jitter: Duration,
}

impl Link {
    /// No loss, no delay: a plain hub.
    pub const CLEAN: Link = Link {
        loss: 0.0,
        delay: Duration::ZERO,
        jitter: Duration::ZERO,
    };

    pub fn new(loss: f64, delay_ms: u64, jitter_ms: u64) -> Link {
        assert!((0.0..=1.0).contains(&loss), "loss {loss} is not in [0, 1]");
        assert!(jitter_ms <= delay_ms, "jitter larger than the delay");
        Link {
            loss,
            delay: Duration::from_millis(delay_ms),
            jitter: Duration::from_millis(jitter_ms),
        }
    }

    /// When a frame that arrived at `now` leaves, or None if it is dropped.
    fn fate(&self, rng: &mut impl Rng, now: Instant) -> Option<Instant> {
        if self.loss > 0.0 && rng.random_bool(self.loss) {
            return None;
        }
        let j = self.jitter.as_secs_f64();
        let extra = if j > 0.0 {
            rng.random_range(-j..=j)
        } else {
            0.0
        };
        let d = (self.delay.as_secs_f64() + extra).max(0.0);
        Some(now + Duration::from_secs_f64(d))
    }
}

/// Counters of one port.
#[derive(Debug, Default)]
pub struct PortCounters {
    /// Frames and bytes the node sent (the hub read them from its TAP).
    pub sent_frames: AtomicU64,
    pub sent_bytes: AtomicU64,
    /// Frames the channel dropped on the way to this node.
    pub dropped: AtomicU64,
    /// Frames delivered to this node.
    pub delivered: AtomicU64,
}

/// A snapshot of one port's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub sent_frames: u64,
    pub sent_bytes: u64,
    pub dropped: u64,
    pub delivered: u64,
}

impl PortCounters {
    fn snapshot(&self) -> PortStats {
        PortStats {
            sent_frames: self.sent_frames.load(Ordering::Relaxed),
            sent_bytes: self.sent_bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
        }
    }
}

pub struct RadioLan {
    hosts: Vec<String>,
    link: Arc<Mutex<Link>>,
    ports: Arc<Vec<PortCounters>>,
    stop: Arc<AtomicBool>,
    hub: Option<JoinHandle<()>>,
}

impl RadioLan {
    /// N hosts on one radio channel that treats every frame as `link` says.
    pub fn new(prefix: &str, n: usize, link: Link) -> RadioLan {
        assert!(n <= 250, "at most 250 hosts on one channel");
        let prefix = &mapped_prefix(prefix);
        claim_prefix(prefix);
        let mut hosts = vec![];
        let mut taps = vec![];
        for i in 0..n {
            let ns = format!("{prefix}-{i}");
            sh(&["ip", "netns", "add", &ns]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            // The TAP is born in this namespace under a name unique to the prefix, then
            // moved and renamed; it vanishes when the hub closes its descriptor.
            let tap_name = format!("{prefix}rt{i}");
            let fd = open_tap(&tap_name);
            sh(&["ip", "link", "set", &tap_name, "netns", &ns]);
            sh(&["ip", "-n", &ns, "link", "set", &tap_name, "name", "eth0"]);
            let addr = format!("{}/24", Self::addr_of(i));
            sh(&["ip", "-n", &ns, "addr", "add", &addr, "dev", "eth0"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            hosts.push(ns);
            taps.push(fd);
        }
        let link = Arc::new(Mutex::new(link));
        let ports = Arc::new((0..n).map(|_| PortCounters::default()).collect::<Vec<_>>());
        let stop = Arc::new(AtomicBool::new(false));
        let hub = {
            let (link, ports, stop) = (link.clone(), ports.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("radio-hub-{prefix}"))
                .spawn(move || Hub::new(taps, link, ports).run(&stop))
                .expect("start the hub thread")
        };
        // IPv6 duplicate address detection on the new links (~2 s), as Lan::new does.
        std::thread::sleep(Duration::from_millis(2000));
        RadioLan {
            hosts,
            link,
            ports,
            stop,
            hub: Some(hub),
        }
    }

    fn addr_of(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, i as u8 + 1)
    }

    /// Namespace name of host `i`.
    pub fn ns(&self, i: usize) -> &str {
        &self.hosts[i]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Address of host `i`.
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Self::addr_of(i)
    }

    /// Changes loss and delay from now on (frames already queued keep their time).
    pub fn set_link(&self, link: Link) {
        *self.link.lock().expect("hub link lock") = link;
    }

    /// Limits what every node sends to `kbit` kbit/s with tbf on its eth0.
    pub fn limit_rate(&self, kbit: u32) {
        for ns in &self.hosts {
            let out = ns_exec(
                ns,
                &[
                    "tc",
                    "qdisc",
                    "replace",
                    "dev",
                    "eth0",
                    "root",
                    "tbf",
                    "rate",
                    &format!("{kbit}kbit"),
                    "burst",
                    "4kb",
                    "latency",
                    "500ms",
                ],
            );
            assert!(
                out.status.success(),
                "tbf on {ns}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Per-port counters, by host index.
    pub fn stats(&self) -> Vec<PortStats> {
        self.ports.iter().map(PortCounters::snapshot).collect()
    }

    /// All ports together.
    pub fn total(&self) -> PortStats {
        self.stats()
            .into_iter()
            .fold(PortStats::default(), |a, p| PortStats {
                sent_frames: a.sent_frames + p.sent_frames,
                sent_bytes: a.sent_bytes + p.sent_bytes,
                dropped: a.dropped + p.dropped,
                delivered: a.delivered + p.delivered,
            })
    }
}

impl Drop for RadioLan {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.hub.take() {
            let _ = h.join();
        }
        for ns in &self.hosts {
            // A sidecar still inside is killed by the Sidecar's own Drop; deleting the
            // namespace then removes what is left.
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

/// Runs `f` on a thread inside namespace `ns` and returns what it returns: sockets
/// made there stay in that namespace, so a test can then use them from anywhere.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    let path = format!("/run/netns/{ns}");
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a valid namespace descriptor; setns moves only this thread.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert!(rc == 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("the thread in the namespace panicked")
    })
}

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `struct ifreq` as TUNSETIFF reads it: the name, then the flags (40 bytes in all).
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Creates TAP device `name` (no packet-info header) and returns its descriptor.
fn open_tap(name: &str) -> OwnedFd {
    assert!(name.len() < libc::IFNAMSIZ, "TAP name {name} too long");
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe {
        libc::open(
            c"/dev/net/tun".as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    assert!(
        fd >= 0,
        "open /dev/net/tun: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor this function owns from here on.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: TUNSETIFF reads and writes a struct ifreq, which IfReq lays out.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    assert!(
        rc == 0,
        "TUNSETIFF {name}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

/// A frame waiting for its delivery time.
struct Queued {
    at: Instant,
    seq: u64,
    port: usize,
    frame: Arc<Vec<u8>>,
}

impl PartialEq for Queued {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Queued {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

/// The hub's state, owned by its thread.
struct Hub {
    taps: Vec<OwnedFd>,
    link: Arc<Mutex<Link>>,
    ports: Arc<Vec<PortCounters>>,
    /// Which port a MAC address was last seen on.
    macs: HashMap<[u8; 6], usize>,
    queue: BinaryHeap<Reverse<Queued>>,
    seq: u64,
}

impl Hub {
    fn new(taps: Vec<OwnedFd>, link: Arc<Mutex<Link>>, ports: Arc<Vec<PortCounters>>) -> Hub {
        Hub {
            taps,
            link,
            ports,
            macs: HashMap::new(),
            queue: BinaryHeap::new(),
            seq: 0,
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut pfds: Vec<libc::pollfd> = self
            .taps
            .iter()
            .map(|fd| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let mut buf = vec![0u8; 65536];
        let mut rng = rand::rng();
        while !stop.load(Ordering::Relaxed) {
            // Wake for the next delivery, and at least every 100 ms to see `stop`.
            let wait = self.queue.peek().map_or(Duration::from_millis(100), |q| {
                q.0.at.saturating_duration_since(Instant::now())
            });
            let ms = wait.min(Duration::from_millis(100)).as_millis() as libc::c_int;
            // SAFETY: pfds is a valid array of pollfd of the given length.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
            if n > 0 {
                for (src, p) in pfds.iter().enumerate() {
                    if p.revents & libc::POLLIN != 0 {
                        self.read_port(src, &mut buf, &mut rng);
                    }
                }
            }
            self.deliver_due();
        }
    }

    /// Reads every frame waiting on port `src` and queues its copies.
    fn read_port(&mut self, src: usize, buf: &mut [u8], rng: &mut impl Rng) {
        loop {
            // SAFETY: buf is valid for writes of its length.
            let n = unsafe {
                libc::read(
                    self.taps[src].as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                )
            };
            if n <= 0 {
                return;
            }
            let frame = &buf[..n as usize];
            if frame.len() < 14 {
                continue;
            }
            let c = &self.ports[src];
            c.sent_frames.fetch_add(1, Ordering::Relaxed);
            c.sent_bytes.fetch_add(n as u64, Ordering::Relaxed);
            self.forward(src, frame, rng);
        }
    }

    fn forward(&mut self, src: usize, frame: &[u8], rng: &mut impl Rng) {
        let mut dst = [0u8; 6];
        let mut from = [0u8; 6];
        dst.copy_from_slice(&frame[0..6]);
        from.copy_from_slice(&frame[6..12]);
        self.macs.insert(from, src);
        let link = *self.link.lock().expect("hub link lock");
        let now = Instant::now();
        let unicast = dst[0] & 1 == 0;
        let targets: Vec<usize> = match self.macs.get(&dst) {
            Some(&p) if unicast => vec![p],
            _ => (0..self.taps.len()).collect(),
        };
        let frame = Arc::new(frame.to_vec());
        for port in targets.into_iter().filter(|&p| p != src) {
            match link.fate(rng, now) {
                None => {
                    self.ports[port].dropped.fetch_add(1, Ordering::Relaxed);
                }
                Some(at) => {
                    self.seq += 1;
                    self.queue.push(Reverse(Queued {
                        at,
                        seq: self.seq,
                        port,
                        frame: frame.clone(),
                    }));
                }
            }
        }
    }

    fn deliver_due(&mut self) {
        let now = Instant::now();
        while self.queue.peek().is_some_and(|q| q.0.at <= now) {
            let Some(Reverse(q)) = self.queue.pop() else {
                break;
            };
            // SAFETY: the frame is valid for reads of its length. A full TAP queue or a
            // link that is down loses the frame, as a radio would.
            let n = unsafe {
                libc::write(
                    self.taps[q.port].as_raw_fd(),
                    q.frame.as_ptr().cast(),
                    q.frame.len(),
                )
            };
            if n > 0 {
                self.ports[q.port].delivered.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}
