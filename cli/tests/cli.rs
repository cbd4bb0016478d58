//! `larder-cli` against real `larder-node` processes.
//!
//! - `create_rebalance_reshard_and_remove_a_node`: `certs init`/`issue`; 3 masters
//!   created and checked, 2000 keys written, `get`/`set`/`del`, a 4th node added
//!   and given slots by `rebalance --use-empty-masters`, 100 slots resharded back,
//!   the rest resharded away (the emptied master becomes a replica of the master
//!   that took its last slot; `check` and `fix` find it healthy), the node removed
//!   with `del-node`; a replica added with
//!   `add-node --replica` takes over its master with `failover`; the cluster stays
//!   healthy and every key readable throughout; usage errors and unreachable nodes
//!   exit 2, refusals exit 1.
//! - `fix_after_the_source_crashes_mid_migration` and
//!   `fix_after_the_target_crashes_mid_migration`: durable nodes (`appendfsync
//!   always`), a reshard of slots holding thousands of keys, SIGKILL of one side
//!   while a slot is half moved, restart from its data directory, `fix`; the cluster
//!   is healthy, every key is on its owner only, and every key reads back.
//! - `fix_after_the_source_fails_over_mid_migration`: the same with a replica of the
//!   source, which takes over after the SIGKILL; `fix` closes the target's import
//!   and hands the keys it received to the new owner, or, if the replica had heard
//!   of the move from its master, resumes the move from the new master.
//!
//! Every wait is on a condition, bounded for a loaded 2-core machine (`CONVERGE`).

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{
    assert_keys, master_keys, start_nodes, take_turn, wait_healthy, write_keys, Env, NodeOpts,
};
use larder::cluster::key_hash_slot;
use larder_cli::ops::{self, Limits};

/// Waits of the library calls. Every wait ends as soon as its condition holds; the
/// bounds are for a loaded 2-core machine, where two scenarios of 3 to 5 debug-build
/// nodes run beside other tests (a quiet machine needs a few seconds).
const LIMITS: Limits = Limits {
    wait: CONVERGE,
    poll: Duration::from_millis(100),
};

/// The bound on each wait for the cluster to converge (a failover, a replica
/// catching up, a node's new role, health after `fix`).
const CONVERGE: Duration = Duration::from_secs(180);

/// `--wait` for `larder-cli` commands that wait for the cluster to converge.
const CLI_WAIT: &str = "180s";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_rebalance_reshard_and_remove_a_node() {
    let _turn = take_turn().await;
    let t0 = Instant::now();
    let env = Env::new();
    let mut nodes = start_nodes(&env, "n", 5, NodeOpts::default());
    let admin = env.admin();
    let addr: Vec<String> = nodes.iter().map(|n| n.addr_s()).collect();
    let socks: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let (a, b, c, d, e) = (&addr[0], &addr[1], &addr[2], &addr[3], &addr[4]);

    // The certificate commands: a CA, then a certificate naming a fresh id.
    let cdir = env.path().join("other-ca");
    let cdir_s = cdir.to_str().unwrap();
    env.cli(&["certs", "init", cdir_s, "--name", "other"])
        .await
        .expect(0);
    let out = env.cli(&["certs", "issue", cdir_s, "tool"]).await.expect(0);
    let tool_id = out.stdout.trim();
    assert!(ops::NodeId::from_hex(tool_id).is_some(), "{tool_id:?}");
    let identity = larder_cli::certs::load_identity(&cdir.join("tool.pem"), &cdir.join("tool.key"));
    assert_eq!(identity.unwrap().id().to_string(), tool_id);
    let out = env.cli(&["certs", "init", cdir_s]).await.expect(1);
    assert!(out.stderr.contains("already exists"), "{}", out.stderr);
    // Roles, and revocation.
    use larder::cluster::larder_cluster::net::{Role, Roles};
    env.cli(&["certs", "issue", "--role", "admin,client", cdir_s, "ro"])
        .await
        .expect(0);
    let ro = larder_cli::certs::load_identity(&cdir.join("ro.pem"), &cdir.join("ro.key")).unwrap();
    assert_eq!(ro.roles(), Roles::of(&[Role::Admin, Role::Client]));
    let roles = larder_cli::certs::load_identity(&cdir.join("tool.pem"), &cdir.join("tool.key"));
    assert_eq!(
        roles.unwrap().roles(),
        Roles::of(&[Role::Node]),
        "the default role"
    );
    let out = env
        .cli(&["certs", "issue", "--role", "root", cdir_s, "x"])
        .await
        .expect(2);
    assert!(out.stderr.contains("unknown role"), "{}", out.stderr);
    let ro_pem = cdir.join("ro.pem");
    let out = env
        .cli(&["certs", "revoke", cdir_s, ro_pem.to_str().unwrap()])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("revokes 1 certificate"),
        "{}",
        out.stdout
    );
    let list = std::fs::read(cdir.join("revoked.crl")).unwrap();
    let list = larder::cluster::larder_cluster::net::RevocationList::from_bytes(&list).unwrap();
    assert!(list.revokes(&ro.cert_chain()[0]));

    // Usage errors and unreachable nodes: exit 2.
    env.cli(&["cluster", "create", a, b, "--yes"])
        .await
        .expect(2);
    let out = env
        .cli(&["--timeout", "500ms", "check", "127.0.0.1:9"])
        .await
        .expect(2);
    assert!(
        out.stderr.contains("cannot reach 127.0.0.1:9"),
        "{}",
        out.stderr
    );

    let out = env
        .cli(&["cluster", "create", a, b, c, "--yes"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("Master[2] -> Slots 10923 - 16383"),
        "{}",
        out.stdout
    );
    let out = env.cli(&["check", b]).await.expect(0);
    assert!(
        out.stdout.contains("[OK] All 16384 slots covered."),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("[OK] The cluster is healthy."),
        "{}",
        out.stdout
    );
    // Creating again is refused: the nodes are not empty.
    env.cli(&["cluster", "create", a, b, c, "--yes"])
        .await
        .expect(1);

    let keys: Vec<String> = (0..2000).map(|i| format!("key:{i}")).collect();
    write_keys(&admin, &socks[..3], &keys).await;
    assert_eq!(master_keys(&admin, socks[0]).await, 2000);
    eprintln!(
        "created and written after {:.1} s",
        t0.elapsed().as_secs_f64()
    );

    // The data helpers of the binary.
    env.cli(&["set", c, "greeting", "hello"]).await.expect(0);
    let out = env.cli(&["get", a, "greeting"]).await.expect(0);
    assert_eq!(out.stdout, "hello");
    let out = env.cli(&["del", b, "greeting"]).await.expect(0);
    assert_eq!(out.stdout.trim(), "1");
    env.cli(&["get", a, "greeting"]).await.expect(1);

    // A 4th node joins as an empty master, then takes a quarter of the slots.
    let out = env.cli(&["add-node", d, a]).await.expect(0);
    assert!(out.stdout.contains(&nodes[3].id_s()), "{}", out.stdout);
    env.cli(&["check", a]).await.expect(0);
    let out = env
        .cli(&["rebalance", a, "--use-empty-masters", "--simulate"])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("Rebalancing across 4 nodes"),
        "{}",
        out.stdout
    );
    let info = ops::info(&admin, socks[0]).await.unwrap();
    assert_eq!(info.iter().find(|m| m.id == nodes[3].id).unwrap().slots, 0);
    let out = env
        .cli(&[
            "rebalance",
            a,
            "--use-empty-masters",
            "--slots-per-call",
            "128",
        ])
        .await
        .expect(0);
    assert!(out.stdout.contains("[OK] Moved"), "{}", out.stdout);
    let info = ops::info(&admin, socks[1]).await.unwrap();
    assert_eq!(info.len(), 4);
    for m in &info {
        assert!((4095..=4097).contains(&m.slots), "{info:?}");
    }
    let out = env.cli(&["rebalance", a]).await.expect(0);
    assert!(
        out.stdout.contains("No rebalancing needed"),
        "{}",
        out.stdout
    );
    env.cli(&["check", d]).await.expect(0);
    assert_keys(&admin, &socks[..4], &keys).await;
    assert_eq!(master_keys(&admin, socks[0]).await, 2000);
    eprintln!("rebalanced after {:.1} s", t0.elapsed().as_secs_f64());

    // 100 slots back to the first master; bad arguments are usage errors.
    env.cli(&[
        "reshard", a, "--from", "ffffffff", "--to", a, "--slots", "1", "--yes",
    ])
    .await
    .expect(2);
    let d_id = nodes[3].id_s();
    let out = env
        .cli(&[
            "reshard", a, "--from", &d_id, "--to", a, "--slots", "100", "--yes",
        ])
        .await
        .expect(0);
    assert!(
        out.stdout.contains("Moving 100 slots from"),
        "{}",
        out.stdout
    );
    let info = ops::info(&admin, socks[0]).await.unwrap();
    let d_slots = info.iter().find(|m| m.id == nodes[3].id).unwrap().slots;
    assert!((3995..=3997).contains(&d_slots), "{info:?}");

    // del-node refuses a node that still serves slots; reshard them out, then remove.
    let out = env.cli(&["del-node", a, &d_id]).await.expect(1);
    assert!(out.stderr.contains("not empty"), "{}", out.stderr);
    env.cli(&[
        "reshard",
        a,
        "--from",
        d,
        "--to",
        b,
        "--slots",
        &d_slots.to_string(),
        "--slots-per-call",
        "128",
        "--yes",
    ])
    .await
    .expect(0);
    // Having handed over its last slot, the node follows the master that took it
    // (Redis 7): a replica of b, and the cluster is healthy as it is.
    let b_id = nodes[1].id_s();
    let deadline = Instant::now() + CONVERGE;
    loop {
        let view = ops::ClusterView::load(&admin, socks[0]).await.unwrap();
        let dn = view.node(nodes[3].id).unwrap();
        if !dn.is_master() && dn.master() == Some(nodes[1].id) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the emptied master did not become a replica of {b_id}: {:?}",
            dn.me()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = env.cli(&["check", a]).await.expect(0);
    assert!(
        out.stdout.contains(&format!("replicates {b_id}")),
        "{}",
        out.stdout
    );
    let out = env.cli(&["--wait", CLI_WAIT, "fix", a]).await.expect(0);
    assert!(out.stdout.contains(">>> No open slots."), "{}", out.stdout);
    assert!(
        out.stdout.contains("[OK] The cluster is healthy."),
        "{}",
        out.stdout
    );
    // del-node removes it as the replica it now is.
    env.cli(&["del-node", a, &d_id[..12]]).await.expect(0);
    let status = nodes[3].wait_exit(CONVERGE);
    assert!(status.success(), "larder-node exited with {status}");
    let out = env.cli(&["check", c]).await.expect(0);
    assert!(!out.stdout.contains(&d_id), "{}", out.stdout);
    let out = env.cli(&["nodes", a]).await.expect(0);
    assert_eq!(out.stdout.lines().count(), 3, "{}", out.stdout);
    assert_keys(&admin, &socks[..3], &keys).await;
    assert_eq!(master_keys(&admin, socks[0]).await, 2000);
    eprintln!("node removed after {:.1} s", t0.elapsed().as_secs_f64());

    // A replica for the master with the fewest, then a manual failover to it.
    let out = env.cli(&["add-node", e, b, "--replica"]).await.expect(0);
    assert!(out.stdout.contains("as replica of"), "{}", out.stdout);
    let view = ops::ClusterView::load(&admin, socks[0]).await.unwrap();
    let old_master = view.node(nodes[4].id).unwrap().master().unwrap();
    let out = env.cli(&["check", e]).await.expect(0);
    assert!(
        out.stdout.contains("1 additional replica(s)"),
        "{}",
        out.stdout
    );
    env.cli(&["failover", a]).await.expect(2);
    let out = env.cli(&["failover", e]).await.expect(0);
    assert!(
        out.stdout.contains(&old_master.to_string()),
        "{}",
        out.stdout
    );
    let view = ops::ClusterView::load(&admin, socks[0]).await.unwrap();
    assert!(view.node(nodes[4].id).unwrap().is_master());
    env.cli(&["check", a]).await.expect(0);
    let via = [socks[0], socks[1], socks[2], socks[4]];
    assert_keys(&admin, &via, &keys).await;
    assert_eq!(master_keys(&admin, socks[4]).await, 2000);
    eprintln!(
        "scenario (a) done after {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// Keys of the test: 2000 in 20 slots among the first `moving` slots (hash tags,
/// 100 keys each, so a slot takes many batches to move) and 500 spread everywhere.
fn crash_keys(moving: u16) -> Vec<String> {
    let mut keys = Vec::new();
    let mut tags = 0;
    let mut i = 0u32;
    while tags < 20 {
        let tag = format!("t{i}");
        i += 1;
        if key_hash_slot(tag.as_bytes()) < moving {
            keys.extend((0..100).map(|k| format!("{{{tag}}}:{k}")));
            tags += 1;
        }
    }
    keys.extend((0..500).map(|k| format!("spread:{k}")));
    keys
}

/// Who fails in the middle of a move.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Crash {
    /// The source is SIGKILLed, then restarted from its data directory.
    Source,
    /// The target is SIGKILLed, then restarted from its data directory.
    Target,
    /// The source is SIGKILLed and its replica takes its slots over, then the old
    /// source restarts as a replica. If the replica knew nothing of the move, the
    /// target's moved keys become strays; if its master had told it, the move
    /// continues under it.
    SourceFailsOver,
}

async fn crash_mid_migration(crash: Crash) {
    let _turn = take_turn().await;
    let t0 = Instant::now();
    let env = Env::new();
    let opts = NodeOpts {
        durable: true,
        ..NodeOpts::default()
    };
    let with_replica = crash == Crash::SourceFailsOver;
    let mut nodes = start_nodes(&env, "m", if with_replica { 4 } else { 3 }, opts);
    let admin = env.admin();
    let socks: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    let plan = ops::plan_create(&admin, &socks[..3], 0).await.unwrap();
    ops::apply_create(&admin, &plan, &LIMITS, &mut |_| {})
        .await
        .unwrap();
    let (src, dst, rep) = (0usize, 1usize, 3usize);
    assert_eq!(plan.masters[src].slots, (0, 5460));
    if with_replica {
        let role = ops::NewRole::ReplicaOf(nodes[src].id_s());
        ops::add_node(&admin, socks[rep], socks[0], role, &LIMITS, &mut |_| {})
            .await
            .unwrap();
    }
    let masters = &socks[..3];
    let moving = 200u16;
    let keys = crash_keys(moving);
    let tag_slots: Vec<u16> = keys
        .iter()
        .filter(|k| k.starts_with('{'))
        .map(|k| key_hash_slot(k.as_bytes()))
        .collect();
    write_keys(&admin, masters, &keys).await;
    let total = keys.len() as u64;
    assert_eq!(master_keys(&admin, socks[2]).await, total);
    if with_replica {
        // Replication is asynchronous: let the replica catch up before the failure,
        // so that what the failover could lose is not the question here.
        let want = admin.nodes(socks[src]).await.unwrap().keys;
        let deadline = Instant::now() + CONVERGE;
        while admin.nodes(socks[rep]).await.unwrap().keys != want {
            assert!(Instant::now() < deadline, "the replica did not catch up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    eprintln!(
        "{} keys written after {:.1} s",
        total,
        t0.elapsed().as_secs_f64()
    );
    // The reshard, as an operator would start it.
    let (src_addr, dst_id) = (nodes[src].addr_s(), nodes[dst].id_s());
    let mut cli = env.spawn_cli(&[
        "reshard",
        &src_addr,
        "--from",
        &src_addr,
        "--to",
        &dst_id,
        "--slots",
        &moving.to_string(),
        "--batch",
        "10",
        "--slots-per-call",
        "16",
        "--yes",
    ]);
    // Until the target holds some, not all, of the keys of a slot it is importing.
    let deadline = Instant::now() + CONVERGE;
    let half_moved = loop {
        assert!(
            cli.running(),
            "the reshard ended before a slot was caught half moved"
        );
        assert!(Instant::now() < deadline, "no slot seen half moved");
        let v = admin.nodes(socks[dst]).await.unwrap();
        if !v.importing.is_empty() {
            let counts = admin.key_counts(socks[dst]).await.unwrap();
            if let Some(&(s, n)) = counts.iter().find(|(s, n)| {
                *n > 0
                    && *n < 100
                    && tag_slots.contains(s)
                    && v.importing.iter().any(|(i, _)| i == s)
            }) {
                break (s, n);
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let victim = if crash == Crash::Target { dst } else { src };
    nodes[victim].kill();
    eprintln!(
        "{crash:?}: killed node {victim} with slot {} half moved ({} keys on the target) \
         after {:.1} s",
        half_moved.0,
        half_moved.1,
        t0.elapsed().as_secs_f64()
    );
    if crash == Crash::Target {
        // The source reports the failed move; the tool says how to repair.
        let out = cli.output().await.expect(1);
        assert!(out.stderr.contains("larder-cli fix"), "{}", out.stderr);
    } else {
        // The tool's request to the dead source would only end at its idle timeout:
        // the operator's tool dies too.
        cli.kill();
    }
    let survivor = socks[if crash == Crash::Target { src } else { dst }].to_string();
    // The dead node costs the request timeout; the live ones must answer within it
    // even on a loaded machine.
    let out = env
        .cli(&["--timeout", "10s", "check", &survivor])
        .await
        .expect(1);
    assert!(out.stdout.contains("unreachable"), "{}", out.stdout);
    if crash == Crash::SourceFailsOver {
        let deadline = Instant::now() + CONVERGE;
        loop {
            let v = admin.nodes(socks[rep]).await.unwrap();
            let me = v.nodes.iter().find(|n| n.id == v.me).unwrap();
            if me.flags & ops::flags::MASTER != 0 && !me.slots.is_empty() && v.cluster_ok {
                break;
            }
            assert!(Instant::now() < deadline, "the replica was not promoted");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!("replica promoted after {:.1} s", t0.elapsed().as_secs_f64());
    }

    nodes[victim].spawn();
    let out = env.cli(&["check", &socks[2].to_string()]).await.expect(1);
    assert!(
        out.stdout.contains("migrating state") || out.stdout.contains("importing state"),
        "{}",
        out.stdout
    );
    let out = env
        .cli(&["--wait", CLI_WAIT, "fix", &socks[2].to_string()])
        .await
        .expect(0);
    eprintln!("{}", out.stdout);
    // After a failover the replica either knew nothing of the move (the target's
    // moved keys are strays, handed to the new master) or had heard of it from its
    // master's pings (the move continues under it, and `fix` resumes it from there):
    // which one depends on when the source died.
    let continued = crash == Crash::SourceFailsOver && {
        let from_replica = format!("from {} to {}", nodes[rep].addr_s(), nodes[dst].addr_s());
        out.stdout
            .lines()
            .any(|l| l.starts_with("resumed the move of slots") && l.contains(&from_replica))
    };
    if crash == Crash::SourceFailsOver && !continued {
        assert!(out.stdout.contains("to their owner"), "{}", out.stdout);
    } else if crash != Crash::SourceFailsOver {
        assert!(
            out.stdout.contains("resumed the move of slots"),
            "{}",
            out.stdout
        );
    }
    let out = env.cli(&["check", &socks[2].to_string()]).await.expect(0);
    assert!(out.stdout.contains("[OK] No open slots."), "{}", out.stdout);
    wait_healthy(&admin, socks[2], CONVERGE).await;

    // Exactly once: no node holds keys of a slot it does not serve (check), the
    // masters' keys add up, and every key reads back.
    let view = ops::ClusterView::load(&admin, socks[2]).await.unwrap();
    let owner = view.owners()[usize::from(half_moved.0)];
    let expected_owner = if crash == Crash::SourceFailsOver && !continued {
        nodes[rep].id
    } else {
        nodes[dst].id
    };
    assert_eq!(owner, Some(expected_owner), "the half-moved slot's owner");
    let mut held = 0u64;
    for m in view.masters() {
        held += admin
            .key_counts(m.sock.unwrap())
            .await
            .unwrap()
            .iter()
            .map(|(_, n)| n)
            .sum::<u64>();
    }
    assert_eq!(held, total, "keys held by the masters");
    assert_eq!(master_keys(&admin, socks[2]).await, total);
    assert_keys(&admin, &socks, &keys).await;
    eprintln!("{crash:?} done after {:.1} s", t0.elapsed().as_secs_f64());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_after_the_source_crashes_mid_migration() {
    crash_mid_migration(Crash::Source).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_after_the_target_crashes_mid_migration() {
    crash_mid_migration(Crash::Target).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fix_after_the_source_fails_over_mid_migration() {
    crash_mid_migration(Crash::SourceFailsOver).await;
}
