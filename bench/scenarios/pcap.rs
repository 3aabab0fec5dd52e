//! mDNS traffic on a test LAN: tcpdump on the bridge in the switch namespace, and a
//! reader for the classic pcap files it writes (the format is a 24-byte file header,
//! then a 16-byte header per packet; no library needed).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

/// What a capture held. Bytes are Ethernet frame lengths as on the wire (without the
/// FCS): the frame's original length, not the captured part.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub packets: u64,
    pub bytes: u64,
    /// Packets sent over IPv6.
    pub v6_packets: u64,
    /// DNS queries (QR bit clear); the rest are responses/announcements.
    pub queries: u64,
}

/// Reads a pcap file (Ethernet link type); a packet cut off at the end (tcpdump was
/// stopped while writing) is ignored.
pub fn count(path: &Path) -> anyhow::Result<Counts> {
    let data = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    parse(&data)
}

pub fn parse(data: &[u8]) -> anyhow::Result<Counts> {
    let Some(head) = data.get(..24) else {
        bail!("pcap file shorter than its header");
    };
    let magic = [head[0], head[1], head[2], head[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file (magic {magic:02x?}; pcapng is not read)"),
    };
    let u32_at = |b: &[u8], i: usize| -> u32 {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    let linktype = u32_at(head, 20);
    if linktype != 1 {
        bail!("pcap link type {linktype}, expected 1 (Ethernet)");
    }
    let mut c = Counts::default();
    let mut off = 24;
    while let Some(rec) = data.get(off..off + 16) {
        let incl = u32_at(rec, 8) as usize;
        let orig = u32_at(rec, 12) as u64;
        let Some(frame) = data.get(off + 16..off + 16 + incl) else {
            break;
        };
        off += 16 + incl;
        c.packets += 1;
        c.bytes += orig;
        let (v6, dns) = match frame.get(12..14) {
            Some([0x08, 0x00]) => {
                let ihl = frame.get(14).map(|b| (b & 0x0f) as usize * 4).unwrap_or(20);
                (false, 14 + ihl + 8)
            }
            Some([0x86, 0xdd]) => (true, 14 + 40 + 8),
            _ => continue,
        };
        if v6 {
            c.v6_packets += 1;
        }
        if frame.get(dns + 2).is_some_and(|f| f & 0x80 == 0) {
            c.queries += 1;
        }
    }
    Ok(c)
}

/// tcpdump capturing UDP port 5353 on `br0` of a switch namespace.
pub struct Capture {
    child: Option<Child>,
    file: PathBuf,
    started: Instant,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts tcpdump and waits until it listens.
    pub async fn start(switch_ns: &str) -> anyhow::Result<Capture> {
        let dir = tempfile::Builder::new()
            .prefix("peat-bench-pcap-")
            .tempdir()?;
        let file = dir.path().join("mdns.pcap");
        let err = dir.path().join("tcpdump.err");
        // -U: write each packet at once; -s 128: headers are enough, the frame's
        // original length is recorded anyway. -Z root: tcpdump would otherwise switch
        // to its own user, which may not write the temp dir.
        let child = Command::new("ip")
            .args([
                "netns", "exec", switch_ns, "tcpdump", "-i", "br0", "-n", "-U",
            ])
            .args(["-s", "128", "-Z", "root", "-w"])
            .arg(&file)
            .args(["udp", "port", "5353"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&err)?)
            .spawn()
            .context("start tcpdump (scripts/apt-packages.txt lists it)")?;
        let mut cap = Capture {
            child: Some(child),
            file,
            started: Instant::now(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let e = std::fs::read_to_string(&err).unwrap_or_default();
            if e.contains("listening on") {
                cap.started = Instant::now();
                return Ok(cap);
            }
            if let Some(st) = cap.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("tcpdump exited ({st}): {e}");
            }
            if Instant::now() > deadline {
                bail!("tcpdump did not start listening within 10 s: {e}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the capture; returns what it held and how long it ran.
    pub async fn finish(mut self) -> anyhow::Result<(Counts, Duration)> {
        let elapsed = self.started.elapsed();
        if let Some(c) = &self.child {
            crate::common::signal(c.id(), "TERM");
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Some(c) = self.child.as_mut() {
            if c.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.kill();
        let c = count(&self.file)?;
        // The bench has no unit tests (harness = false): check the reader against
        // tcpdump's own on every capture instead.
        let out = Command::new("tcpdump")
            .args(["-r"])
            .arg(&self.file)
            .args(["-n", "-q"])
            .stderr(Stdio::null())
            .output()
            .context("tcpdump -r")?;
        let theirs = String::from_utf8_lossy(&out.stdout).lines().count() as u64;
        if theirs != c.packets {
            bail!(
                "pcap reader counted {} packets, tcpdump -r {theirs}",
                c.packets
            );
        }
        Ok((c, elapsed))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}
