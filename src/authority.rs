//! `peat-sidecar authority`: the offline authority's commands. `init` makes the key
//! pair, `issue` signs a member certificate, `revoke` signs a revocation. They run on
//! the authority's machine, never on a device, and touch only the files they are told.
//!
//! An authority directory holds `authority.key` (the secret, mode 0600),
//! `authority.pub` (the public key for `--authority-key`) and `issued.log` (one line per
//! certificate: serial, endpoint id, not-before, not-after, name), from which serials
//! are numbered and a revocation learns until when it must be kept.

use std::{
    fs,
    io::Write,
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context};
use iroh::{EndpointId, SecretKey};

use crate::{
    config::{AuthorityArgs, AuthorityCommand, IssueArgs, RevokeArgs},
    data::Pattern,
    outln,
    trust::{
        self, armor, dearmor, store::read_text, AuthorityKey, MemberCert, Revocation, CERT_LABEL,
        MAX_NAME_LEN, MAX_PATTERNS, REVOCATION_LABEL, SECRET_LABEL,
    },
};

pub const SECRET_FILE: &str = "authority.key";
pub const PUBLIC_FILE: &str = "authority.pub";
pub const LOG_FILE: &str = "issued.log";

pub fn run(args: &AuthorityArgs) -> anyhow::Result<()> {
    match &args.command {
        AuthorityCommand::Init { out } => init(out),
        AuthorityCommand::Issue(a) => issue(a),
        AuthorityCommand::Revoke(a) => revoke(a),
    }
}

fn init(dir: &Path) -> anyhow::Result<()> {
    let secret_path = dir.join(SECRET_FILE);
    if secret_path.exists() {
        bail!(
            "{} exists already: an authority is never overwritten (its certificates would all become useless). Choose another --out",
            secret_path.display()
        );
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the authority directory {}", dir.display()))?;
    let secret = SecretKey::generate();
    let key = AuthorityKey(secret.public());
    let text = format!(
        "# peat-sidecar authority secret key (key id {}): keep it offline, never on a device\n{}",
        key.id(),
        armor(SECRET_LABEL, &secret.to_bytes())
    );
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&secret_path)
        .with_context(|| format!("cannot create {}", secret_path.display()))?;
    f.write_all(text.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", secret_path.display()))?;
    let public_path = dir.join(PUBLIC_FILE);
    write_file(&public_path, &key.to_file_text())?;
    outln!("authority created in {}", dir.display())?;
    outln!("key id      {}", key.id())?;
    outln!("public key  {key}")?;
    outln!(
        "secret      {} (mode 0600: keep it offline)",
        secret_path.display()
    )?;
    outln!(
        "give every device the public key: --authority-key {}",
        public_path.display()
    )?;
    Ok(())
}

/// The authority's secret key from its directory.
fn load_secret(dir: &Path) -> anyhow::Result<SecretKey> {
    let path = dir.join(SECRET_FILE);
    let text = read_text(&path).with_context(|| {
        format!(
            "cannot read the authority's secret key {} (create an authority with `peat-sidecar authority init --out DIR`)",
            path.display()
        )
    })?;
    let bytes = dearmor(SECRET_LABEL, &text)
        .with_context(|| format!("{} is not an authority secret key", path.display()))?;
    let arr: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        anyhow::anyhow!(
            "{} is not an authority secret key: it holds {} bytes, not 32",
            path.display(),
            bytes.len()
        )
    })?;
    Ok(SecretKey::from_bytes(&arr))
}

/// One issued certificate as `issued.log` records it.
struct Issued {
    serial: u64,
    endpoint_id: String,
    not_after: u64,
}

fn read_log(dir: &Path) -> anyhow::Result<Vec<Issued>> {
    let path = dir.join(LOG_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let parsed = (f.len() >= 4)
            .then(|| Some((f[0].parse::<u64>().ok()?, f[3].parse::<u64>().ok()?)))
            .flatten();
        let Some((serial, not_after)) = parsed else {
            bail!(
                "{} line {} is not a record of an issued certificate: {line:?}",
                path.display(),
                n + 1
            );
        };
        out.push(Issued {
            serial,
            endpoint_id: f[1].to_string(),
            not_after,
        });
    }
    Ok(out)
}

fn check_patterns(flag: &str, patterns: &[String]) -> anyhow::Result<Vec<String>> {
    if patterns.len() > MAX_PATTERNS {
        bail!(
            "{flag}: at most {MAX_PATTERNS} patterns, got {}",
            patterns.len()
        );
    }
    for p in patterns {
        Pattern::parse(p).map_err(|e| anyhow::anyhow!("{flag} `{p}`: {e}"))?;
    }
    Ok(if patterns.is_empty() {
        vec!["**".to_string()]
    } else {
        patterns.to_vec()
    })
}

fn issue(a: &IssueArgs) -> anyhow::Result<()> {
    if a.name.is_empty() || a.name.len() > MAX_NAME_LEN || a.name.chars().any(char::is_control) {
        bail!("--name must be 1 to {MAX_NAME_LEN} bytes without control characters");
    }
    let publish = check_patterns("--publish", &a.publish)?;
    let subscribe = check_patterns("--subscribe", &a.subscribe)?;
    let secret = load_secret(&a.authority)?;
    let key = AuthorityKey(secret.public());
    let log = read_log(&a.authority)?;
    let serial = log.iter().map(|i| i.serial).max().unwrap_or(0) + 1;
    let now = trust::unix_now();
    let cert = MemberCert {
        endpoint_id: a.endpoint_id,
        name: a.name.clone(),
        publish,
        subscribe,
        not_before: now,
        not_after: now.saturating_add(a.valid_for.as_secs()),
        serial,
        authority: key.id(),
    };
    cert.check_shape()?;
    let text = format!(
        "# peat-sidecar member certificate\n# name:        {}\n# endpoint id: {}\n# serial:      {}\n# valid:       {} to {}\n# publish:     {}\n# subscribe:   {}\n# authority:   {}\n{}",
        cert.name,
        cert.endpoint_id,
        cert.serial,
        trust::time(cert.not_before),
        trust::time(cert.not_after),
        cert.publish.join(" "),
        cert.subscribe.join(" "),
        key.id(),
        armor(CERT_LABEL, &cert.sign(&secret))
    );
    append_log(&a.authority, &cert)?;
    write_file(&a.out, &text)?;
    outln!(
        "certificate {} for {} ({}) valid until {} written to {}",
        cert.serial,
        cert.name,
        cert.endpoint_id,
        trust::time(cert.not_after),
        a.out.display()
    )?;
    Ok(())
}

fn append_log(dir: &Path, c: &MemberCert) -> anyhow::Result<()> {
    let path = dir.join(LOG_FILE);
    let mut f = fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // Names may hold tabs only as spaces: the log is tab-separated.
    writeln!(
        f,
        "{}\t{}\t{}\t{}\t{}",
        c.serial,
        c.endpoint_id,
        c.not_before,
        c.not_after,
        c.name.replace('\t', " ")
    )
    .and_then(|()| f.sync_all())
    .with_context(|| format!("cannot write {}", path.display()))
}

fn revoke(a: &RevokeArgs) -> anyhow::Result<()> {
    let secret = load_secret(&a.authority)?;
    let key = AuthorityKey(secret.public());
    let id: EndpointId = a.endpoint_id;
    let issued: Vec<_> = read_log(&a.authority)?
        .into_iter()
        .filter(|i| i.endpoint_id == id.to_string())
        .collect();
    // Kept until the last certificate issued for it has expired; for ever if this
    // authority directory has no record of one.
    let prune_after = issued.iter().map(|i| i.not_after).max().unwrap_or(u64::MAX);
    let rev = Revocation {
        endpoint_id: id,
        issued_at: trust::unix_now(),
        prune_after,
        authority: key.id(),
    };
    let text = format!(
        "# peat-sidecar revocation\n# endpoint id: {id}\n# issued:      {}\n# keep until:  {}\n# authority:   {}\n{}",
        trust::time(rev.issued_at),
        if prune_after == u64::MAX {
            "for ever (no certificate for it in issued.log)".to_string()
        } else {
            trust::time(prune_after)
        },
        key.id(),
        armor(REVOCATION_LABEL, &rev.sign(&secret))
    );
    write_file(&a.out, &text)?;
    outln!(
        "revocation of {id} ({} certificate(s) issued by this authority) written to {}",
        issued.len(),
        a.out.display()
    )?;
    Ok(())
}

/// Writes `text` to a temporary file next to `path` and renames it over `path`, so
/// that a node re-reading the file never sees half of it.
fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    let tmp = PathBuf::from(format!("{}.{}.tmp", path.display(), std::process::id()));
    let result = write_then_rename(&tmp, path, text);
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

fn write_then_rename(tmp: &Path, path: &Path, text: &str) -> std::io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o644)
        .open(tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(tmp, path)
}
