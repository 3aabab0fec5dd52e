//! Topic rights of member certificates on real sidecars, on loopback (no root): a
//! message relayed by one node is checked against its publisher's rights, known from
//! the member directory the formation spreads (`_peat/members`), and a node sends a
//! peer nothing outside that peer's subscribe rights, live or by anti-entropy. (A
//! message straight from a publisher outside its rights: tests/trust_live.rs.)

mod common;

use std::time::Duration;

use common::{
    data::{data_stats, get, msg, publish, wait_subscribers, Drained},
    rogue::Rogue,
    trust::{enrol, issue, issue_for, s, Enrolment},
    wait_until, Opts, Sidecar,
};
use peat_sidecar::{
    data::wire::Frame,
    node::{formation::Formation, identity},
    trust::{
        store::{TrustConfig, TrustStore},
        AuthorityKey,
    },
};

async fn connected(a: &Sidecar, b: &Sidecar) {
    let linked = wait_until(Duration::from_secs(20), || async {
        a.connected().await.contains(&b.id)
    })
    .await;
    assert!(linked.is_some(), "{} never connected to {}", a.name, b.name);
}

/// Options of enrolled node `i` with certificate `cert`, dialling `peers`.
fn enrolled(e: &Enrolment, cert: &std::path::Path, peers: Vec<String>) -> Opts {
    Opts {
        peers,
        extra: ["--authority-key", s(&e.key), "--member-cert", s(cert)]
            .map(String::from)
            .to_vec(),
        ..Opts::default()
    }
}

/// A node that may subscribe only to `tracks/**` gets nothing else from its peer: not
/// live, not by anti-entropy; a node with the default rights (`**`) beside it gets all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_gets_only_what_its_certificate_lets_it_subscribe_to() {
    let t = tempfile::tempdir().unwrap();
    let e = enrol(t.path(), 3);
    let narrow = issue_for(&e, 1, &["--subscribe", "tracks/**"], t.path());
    let (c0, c2) = (
        issue_for(&e, 0, &[], t.path()),
        issue_for(&e, 2, &[], t.path()),
    );
    let a = Sidecar::start_in("a", &e.dirs[0], enrolled(&e, &c0, vec![])).await;
    let b = Sidecar::start_in("b", &e.dirs[1], enrolled(&e, &narrow, vec![a.peer_spec()])).await;
    let c = Sidecar::start_in("c", &e.dirs[2], enrolled(&e, &c2, vec![a.peer_spec()])).await;
    connected(&a, &b).await;
    connected(&a, &c).await;
    let on_b = Drained::subscribe(&b, "**", false).await;
    let on_c = Drained::subscribe(&c, "**", false).await;
    wait_subscribers(&b, 1, Duration::from_secs(10)).await;
    wait_subscribers(&c, 1, Duration::from_secs(10)).await;

    let all_there = wait_until(Duration::from_secs(30), || async {
        for (topic, retain) in [("tracks/1", false), ("other/1", false)] {
            publish(&a, msg(topic, "", "v", retain)).await;
        }
        publish(&a, msg("tracks/r", "", "kept", true)).await;
        publish(&a, msg("other/r", "", "kept", true)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        on_c.count_topic("other/1") > 0
            && on_b.count_topic("tracks/1") > 0
            && !get(&c, "other/r").await.is_empty()
            && !get(&b, "tracks/r").await.is_empty()
    })
    .await;
    assert!(all_there.is_some(), "a's messages did not arrive");
    // One more anti-entropy chance for anything b should not have.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let outside: Vec<String> = on_b
        .messages()
        .into_iter()
        .map(|m| m.topic)
        .filter(|t| t.starts_with("other/"))
        .collect();
    assert!(outside.is_empty(), "b got {outside:?}");
    assert!(
        get(&b, "other/**").await.is_empty(),
        "b holds {:?}",
        get(&b, "other/**").await
    );
    // The directory reaches b all the same: system topics go to everyone.
    assert!(!get(&b, "_peat/members").await.is_empty());
}

/// Member certificates and signed origins together: a member's rights are checked on
/// messages relayed by another node too, from the directory of certificates the
/// formation spreads. X (an accomplice that publishes outside its `tracks/**` rights,
/// `PEAT_SIDECAR_TEST_IGNORE_RIGHTS`, debug builds) - B - C, and a rogue member R
/// linked to X and C: R hands X's signed message to C, which never linked to X.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_message_is_checked_against_its_publishers_rights() {
    let t = tempfile::tempdir().unwrap();
    let e = enrol(t.path(), 4);
    let cert = |i: usize| {
        issue(
            &e.auth,
            &e.ids[i],
            &format!("n{i}"),
            "1d",
            &t.path().join(format!("n{i}.cert")),
        )
    };
    let certs: Vec<_> = (0..4).map(cert).collect();
    let opts = |i: usize, peers: Vec<String>| Opts {
        peers,
        extra: ["--authority-key", s(&e.key), "--member-cert", s(&certs[i])]
            .map(String::from)
            .to_vec(),
        ..Opts::default()
    };
    let b = Sidecar::start_in("b", &e.dirs[1], opts(1, vec![])).await;
    let mut xo = opts(0, vec![b.peer_spec()]);
    xo.env
        .push(("PEAT_SIDECAR_TEST_IGNORE_RIGHTS".into(), "1".into()));
    let x = Sidecar::start_in("x", &e.dirs[0], xo).await;
    let c = Sidecar::start_in("c", &e.dirs[2], opts(2, vec![b.peer_spec()])).await;
    connected(&b, &x).await;
    connected(&b, &c).await;
    // C learns X's certificate through B, from the directory.
    let listed = wait_until(Duration::from_secs(20), || async {
        get(&c, "_peat/members").await.iter().any(|m| m.key == x.id)
    })
    .await;
    assert!(
        listed.is_some(),
        "c never got x's certificate: {:?}",
        get(&c, "_peat/members").await
    );

    let key = identity::load_or_create(&e.dirs[3]).unwrap();
    let authority = AuthorityKey::parse(&std::fs::read_to_string(&e.key).unwrap()).unwrap();
    let config = TrustConfig {
        authority,
        cert_path: certs[3].clone(),
        skew: Duration::from_secs(600),
        revocation_paths: vec![],
        learned: vec![],
    };
    let store = std::sync::Arc::new(TrustStore::load(&config, key.public()).unwrap());
    let formation = || Formation::new("test", None).with_trust(store.clone());
    let on_x = Rogue::join_as(&x, key.clone(), formation()).await;
    let mut on_c = Rogue::join_as(&c, key.clone(), formation()).await;
    let heard = wait_until(Duration::from_secs(20), || async {
        publish(&x, msg("secret/plans", "", "outside x's rights", true)).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        on_x.heard_on("secret/plans").is_some()
    })
    .await;
    assert!(heard.is_some(), "the rogue got nothing from x");
    let m = on_x.heard_on("secret/plans").unwrap();
    assert!(m.sig.is_some(), "x signs its retained messages");
    let rejected = data_stats(&c).await.rejected;
    on_c.send(&Frame::Msg(m.clone())).await;
    on_c.send(&Frame::Entries(vec![m])).await;
    let refused = wait_until(Duration::from_secs(10), || async {
        data_stats(&c).await.rejected >= rejected + 2
    })
    .await;
    assert!(refused.is_some(), "c: {:?}", data_stats(&c).await);
    assert!(get(&c, "secret/**").await.is_empty());
    assert!(
        get(&b, "secret/**").await.is_empty(),
        "b took it straight from x"
    );
    assert!(c
        .log()
        .contains("member certificate does not allow this topic"));
    on_x.close();
    on_c.close();
}
