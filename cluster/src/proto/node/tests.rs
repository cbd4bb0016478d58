//! One test per protocol rule. A simulated cluster provides a realistic starting point;
//! each test then feeds one node hand-made messages and checks its reaction.

use super::*;
use crate::proto::codec::{mflags, Gossip, Header};
use crate::sim::{Sim, SimConfig};

fn cluster(masters: usize, replicas: usize) -> Sim {
    let mut sim = Sim::new(SimConfig::new(42, masters, replicas));
    sim.bootstrap().unwrap();
    sim.run_for(500).unwrap();
    sim
}

fn id(sim: &Sim, i: usize) -> NodeId {
    sim.machine(i).id
}

fn header_of(sim: &Sim, i: usize) -> Header {
    sim.node(i).unwrap().header(0)
}

fn drain(node: &mut Node) -> (Vec<Transmit>, Vec<Event>) {
    let mut t = Vec::new();
    let mut e = Vec::new();
    while let Some(x) = node.poll_transmit() {
        t.push(x);
    }
    while let Some(x) = node.poll_event() {
        e.push(x);
    }
    (t, e)
}

fn flags(node: &Node, of: NodeId) -> NodeFlags {
    node.nodes[&of].flags
}

fn ping(header: Header, gossip: Vec<Gossip>) -> Message {
    Message {
        header,
        body: Body::Ping {
            sent_at: 1,
            gossip,
            migrations: vec![],
        },
    }
}

fn report(about: NodeId, f: NodeFlags) -> Gossip {
    Gossip {
        node: about,
        addr: "x:1".into(),
        flags: f,
    }
}

#[test]
fn sender_must_match_authenticated_peer() {
    let mut sim = cluster(3, 0);
    let h = header_of(&sim, 1);
    let (b, c) = (id(&sim, 1), id(&sim, 2));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    assert_eq!(
        n0.handle_message(now, c, ping(h, vec![])),
        Err(Rejected::SenderMismatch {
            claimed: b,
            authenticated: c
        })
    );
    let mine = n0.header(0);
    let me = n0.id();
    assert_eq!(
        n0.handle_message(now, me, ping(mine, vec![])),
        Err(Rejected::FromMyself)
    );
    assert!(matches!(
        n0.handle_bytes(now, b, b"junk"),
        Err(HandleError::Decode(_))
    ));
}

#[test]
fn ping_is_answered_with_pong_acking_valid_claims() {
    let mut sim = cluster(3, 0);
    let h = header_of(&sim, 1);
    let b = id(&sim, 1);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    drain(n0);
    n0.handle_message(now, b, ping(h.clone(), vec![])).unwrap();
    let (t, _) = drain(n0);
    assert!(t.iter().any(|t| t.to == Some(b)
        && matches!(
            t.message.body,
            Body::Pong {
                echo: 1,
                claims_acked: true,
                ..
            }
        )));
    // A claim on slots someone else owns (with an equal epoch) is not acknowledged.
    let mut greedy = h;
    greedy.slots = SlotSet::full();
    n0.handle_message(now, b, ping(greedy, vec![])).unwrap();
    let (t, _) = drain(n0);
    assert!(t.iter().any(|t| matches!(
        t.message.body,
        Body::Pong {
            claims_acked: false,
            ..
        }
    )));
}

#[test]
fn pfail_after_node_timeout_without_answer() {
    let mut sim = cluster(3, 0);
    let c = id(&sim, 2);
    sim.crash(2);
    let start = sim.now();
    let heard = sim.node(0).unwrap().nodes[&c].data_received;
    sim.run_until(3000, "PFAIL", |s| {
        flags(s.node(0).unwrap(), c).intersects(NodeFlags::PFAIL | NodeFlags::FAIL)
    })
    .unwrap();
    let n0 = sim.node(0).unwrap();
    // Not before node_timeout of silence, and within one tick after it.
    assert!(
        sim.now().since(heard) > 1000,
        "flagged after {} ms of silence",
        sim.now().since(heard)
    );
    assert!(sim.now().since(heard) <= 1000 + n0.config.cron_interval() + 10);
    assert!(sim.now().since(start) <= 1100);
}

#[test]
fn pong_clears_pfail() {
    let mut sim = cluster(3, 0);
    let c = id(&sim, 2);
    let h = header_of(&sim, 2);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.nodes.get_mut(&c).unwrap().flags.insert(NodeFlags::PFAIL);
    let pong = Message {
        header: h,
        body: Body::Pong {
            echo: 0,
            claims_acked: false,
            gossip: vec![],
            migrations: vec![],
        },
    };
    n0.handle_message(now, c, pong).unwrap();
    assert!(!flags(n0, c).contains(NodeFlags::PFAIL));
}

#[test]
fn fail_needs_reports_from_a_majority_of_masters() {
    // 3 masters + 1 replica each: quorum is 2 masters.
    let mut sim = cluster(3, 1);
    let (b, c, rb) = (id(&sim, 1), id(&sim, 2), id(&sim, 4));
    let (hb, hrb) = (header_of(&sim, 1), header_of(&sim, 4));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.nodes.get_mut(&c).unwrap().flags.insert(NodeFlags::PFAIL);
    // A replica's report does not count.
    n0.handle_message(
        now,
        rb,
        ping(hrb, vec![report(c, NodeFlags::MASTER | NodeFlags::PFAIL)]),
    )
    .unwrap();
    assert!(!flags(n0, c).contains(NodeFlags::FAIL));
    drain(n0);
    // n0 itself + master b: a majority.
    n0.handle_message(
        now,
        b,
        ping(hb, vec![report(c, NodeFlags::MASTER | NodeFlags::PFAIL)]),
    )
    .unwrap();
    assert!(flags(n0, c).contains(NodeFlags::FAIL));
    let (t, e) = drain(n0);
    assert!(e.contains(&Event::NodeFailed(c)));
    // FAIL is broadcast to everyone but the failed node.
    let fails = t
        .iter()
        .filter(|t| matches!(t.message.body, Body::Fail { node } if node == c))
        .count();
    assert_eq!(fails, 4);
    assert!(t
        .iter()
        .all(|t| t.to != Some(c) || !matches!(t.message.body, Body::Fail { .. })));
}

#[test]
fn reports_expire_and_can_be_withdrawn() {
    let mut sim = cluster(5, 0);
    let (b, e) = (id(&sim, 1), id(&sim, 4));
    let hb = header_of(&sim, 1);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(
        now,
        b,
        ping(
            hb.clone(),
            vec![report(e, NodeFlags::MASTER | NodeFlags::PFAIL)],
        ),
    )
    .unwrap();
    assert_eq!(
        n0.nodes
            .get_mut(&e)
            .unwrap()
            .fail_reports
            .count_valid(now, 2000),
        1
    );
    n0.handle_message(now, b, ping(hb, vec![report(e, NodeFlags::MASTER)]))
        .unwrap();
    assert_eq!(
        n0.nodes
            .get_mut(&e)
            .unwrap()
            .fail_reports
            .count_valid(now, 2000),
        0
    );
}

#[test]
fn fail_message_is_believed_and_cleared_as_redis_does() {
    let mut sim = cluster(3, 1);
    let (b, c, rc) = (id(&sim, 1), id(&sim, 2), id(&sim, 5));
    let (hb, hc, hrc) = (header_of(&sim, 1), header_of(&sim, 2), header_of(&sim, 5));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    let fail = |node| Message {
        header: hb.clone(),
        body: Body::Fail { node },
    };
    n0.handle_message(now, b, fail(c)).unwrap();
    n0.handle_message(now, b, fail(rc)).unwrap();
    assert!(flags(n0, c).contains(NodeFlags::FAIL) && flags(n0, rc).contains(NodeFlags::FAIL));
    assert_eq!(
        n0.state(),
        ClusterState::Fail,
        "a FAIL master leaves slots uncovered"
    );
    let pong = |h: Header| Message {
        header: h,
        body: Body::Pong {
            echo: 0,
            claims_acked: false,
            gossip: vec![],
            migrations: vec![],
        },
    };
    // A replica's FAIL clears on its first pong.
    n0.handle_message(now + 10, rc, pong(hrc)).unwrap();
    assert!(!flags(n0, rc).contains(NodeFlags::FAIL));
    // A master with slots stays FAIL for 2 * node_timeout: someone may be replacing it.
    n0.handle_message(now + 1000, c, pong(hc.clone())).unwrap();
    assert!(flags(n0, c).contains(NodeFlags::FAIL));
    n0.handle_message(now + 2001, c, pong(hc)).unwrap();
    assert!(!flags(n0, c).contains(NodeFlags::FAIL));
}

/// Node 0 votes; master 1 failed; its replicas are nodes 5 and 6 (3 masters x 2).
fn vote_setup() -> (Sim, NodeId, NodeId, NodeId) {
    let mut sim = cluster(3, 2);
    let (m1, r5, r6) = (id(&sim, 1), id(&sim, 5), id(&sim, 6));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    // Keep n0's own lease current however far a test moves time.
    n0.nodes
        .values_mut()
        .for_each(|r| r.lease_until = now + 100_000);
    let rec = n0.nodes.get_mut(&m1).unwrap();
    rec.flags.insert(NodeFlags::FAIL);
    rec.last_ack_sent = None;
    drain(n0);
    (sim, m1, r5, r6)
}

fn request(sim: &Sim, from: usize, epoch: u64, force: bool) -> Message {
    let mut h = sim
        .node(from)
        .unwrap()
        .header(if force { mflags::FORCEACK } else { 0 });
    h.current_epoch = epoch;
    Message {
        header: h,
        body: Body::FailoverAuthRequest,
    }
}

fn acks(t: &[Transmit]) -> Vec<(Option<NodeId>, u64)> {
    t.iter()
        .filter_map(|t| {
            if let Body::FailoverAuthAck { epoch } = t.message.body {
                Some((t.to, epoch))
            } else {
                None
            }
        })
        .collect()
}

#[test]
fn master_votes_once_per_epoch() {
    let (mut sim, _m1, r5, r6) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let (q5, q6) = (request(&sim, 5, e, false), request(&sim, 6, e, false));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(now, r5, q5).unwrap();
    assert_eq!(acks(&drain(n0).0), vec![(Some(r5), e)]);
    assert_eq!(n0.last_vote_epoch(), e);
    assert!(
        n0.poll_save().is_some(),
        "the vote must be saved before the ack leaves"
    );
    n0.handle_message(now, r6, q6).unwrap();
    assert!(acks(&drain(n0).0).is_empty());
}

#[test]
fn a_repeated_request_gets_the_same_vote_again() {
    let (mut sim, _m1, r5, r6) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let (q5, q6) = (request(&sim, 5, e, false), request(&sim, 6, e, false));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(now, r5, q5.clone()).unwrap();
    n0.handle_message(now + 300, r5, q5).unwrap();
    assert_eq!(acks(&drain(n0).0), vec![(Some(r5), e), (Some(r5), e)]);
    n0.handle_message(now + 300, r6, q6).unwrap();
    assert!(acks(&drain(n0).0).is_empty());
}

#[test]
fn no_vote_unless_master_failed_or_forced() {
    let (mut sim, m1, r5, _) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let (q, qf) = (request(&sim, 5, e, false), request(&sim, 5, e + 1, true));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.nodes.get_mut(&m1).unwrap().flags.remove(NodeFlags::FAIL);
    n0.handle_message(now, r5, q).unwrap();
    assert!(acks(&drain(n0).0).is_empty());
    n0.handle_message(now, r5, qf).unwrap();
    assert_eq!(acks(&drain(n0).0), vec![(Some(r5), e + 1)]);
}

#[test]
fn no_vote_for_a_sibling_within_two_node_timeouts() {
    let (mut sim, _, r5, r6) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let (q5, q6, q6_late) = (
        request(&sim, 5, e, false),
        request(&sim, 6, e + 1, false),
        request(&sim, 6, e + 2, false),
    );
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(now, r5, q5).unwrap();
    n0.handle_message(now + 1999, r6, q6).unwrap();
    assert_eq!(acks(&drain(n0).0), vec![(Some(r5), e)]);
    n0.handle_message(now + 2001, r6, q6_late).unwrap();
    assert_eq!(acks(&drain(n0).0), vec![(Some(r6), e + 2)]);
}

#[test]
fn no_vote_for_stale_slot_claims() {
    let (mut sim, m1, r5, _) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let q = request(&sim, 5, e, false);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    // Someone newer owns the failed master's slots already.
    let claimed = q.header.config_epoch;
    n0.nodes.get_mut(&m1).unwrap().config_epoch = claimed + 10;
    n0.handle_message(now, r5, q).unwrap();
    assert!(acks(&drain(n0).0).is_empty());
}

#[test]
fn a_master_without_a_current_lease_does_not_vote() {
    let (mut sim, _, r5, _) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let q = request(&sim, 5, e, false);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.nodes
        .values_mut()
        .for_each(|r| r.lease_until = Instant::ZERO);
    n0.handle_message(now, r5, q).unwrap();
    assert!(acks(&drain(n0).0).is_empty());
}

#[test]
fn replicas_and_slotless_masters_do_not_vote() {
    let (mut sim, _, r5, _) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let q = request(&sim, 5, e, true);
    let now = sim.now();
    let n3 = sim.node_mut(3).unwrap();
    assert!(!n3.is_master());
    n3.handle_message(now, r5, q).unwrap();
    assert!(acks(&drain(n3).0).is_empty());
}

#[test]
fn vote_waits_out_the_old_masters_lease() {
    let (mut sim, m1, r5, _) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let q = request(&sim, 5, e, false);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.nodes.get_mut(&m1).unwrap().last_ack_sent = Some(now);
    n0.handle_message(now, r5, q).unwrap();
    let (t, ev) = drain(n0);
    assert!(acks(&t).is_empty(), "ack deferred");
    assert!(ev.contains(&Event::VoteGranted {
        candidate: r5,
        epoch: e
    }));
    assert!(n0.poll_timeout() <= now + 1000);
    n0.handle_timeout(now + 999);
    assert!(acks(&drain(n0).0).is_empty());
    n0.handle_timeout(now + 1000);
    assert_eq!(acks(&drain(n0).0), vec![(Some(r5), e)]);
    // And it no longer acknowledges the old master's claims.
    let mut h = n0.header(0);
    h.sender = m1;
    h.slots = n0.nodes[&m1].slots.clone();
    h.config_epoch = n0.nodes[&m1].config_epoch;
    n0.nodes.get_mut(&m1).unwrap().flags.remove(NodeFlags::FAIL);
    n0.handle_message(now + 1000, m1, ping(h, vec![])).unwrap();
    assert!(drain(n0).0.iter().any(|t| matches!(
        t.message.body,
        Body::Pong {
            claims_acked: false,
            ..
        }
    )));
}

#[test]
fn acks_from_an_older_election_never_count() {
    let mut sim = cluster(3, 1);
    let (m0, m1) = (id(&sim, 0), id(&sim, 1));
    let (h0, h1) = (header_of(&sim, 0), header_of(&sim, 1));
    let now = sim.now();
    let r = sim.node_mut(3).unwrap();
    r.nodes.get_mut(&m0).unwrap().flags.insert(NodeFlags::FAIL);
    let e = r.current_epoch() + 5;
    r.election = Election {
        auth_time: Some(now),
        sent: true,
        epoch: e,
        ..Election::default()
    };
    let ack = |h: &Header, epoch| Message {
        header: h.clone(),
        body: Body::FailoverAuthAck { epoch },
    };
    r.handle_message(now, m1, ack(&h1, e - 1)).unwrap();
    assert!(r.election.votes.is_empty(), "stale ack counted");
    r.handle_message(now, m1, ack(&h1, e)).unwrap();
    r.handle_message(now, m1, ack(&h1, e)).unwrap();
    assert_eq!(r.election.votes.len(), 1, "a duplicated ack counts once");
    assert!(!r.is_master());
    // The failed master's own vote would not count either (it is not serving... it
    // is FAIL); a second live master completes the majority of 3.
    let _ = h0;
    let h2 = sim.node(2).unwrap().header(0);
    let m2 = id(&sim, 2);
    let r = sim.node_mut(3).unwrap();
    r.handle_message(now, m2, ack(&h2, e)).unwrap();
    assert!(r.is_master());
    assert_eq!(r.config_epoch(), e, "the winner takes the election epoch");
    assert_eq!(r.my_slots().len(), 5461);
    let (t, ev) = drain(r);
    assert!(ev.contains(&Event::Promoted(e)));
    assert!(
        t.iter()
            .filter(|t| matches!(t.message.body, Body::Ping { .. }))
            .count()
            >= 4
    );
}

#[test]
fn rank_follows_replication_offset() {
    let mut sim = cluster(3, 2);
    let (r5, r6) = (id(&sim, 5), id(&sim, 6));
    let n5 = sim.node_mut(5).unwrap();
    n5.set_repl_offset(100);
    n5.nodes.get_mut(&r6).unwrap().repl_offset = 200;
    assert_eq!(n5.rank(), 1);
    n5.nodes.get_mut(&r6).unwrap().repl_offset = 50;
    assert_eq!(n5.rank(), 0);
    // Equal offsets: the smaller id goes first.
    n5.nodes.get_mut(&r6).unwrap().repl_offset = 100;
    assert_eq!(n5.rank(), usize::from(r6 < r5));
}

#[test]
fn election_delay_is_fixed_plus_random_plus_rank() {
    let mut sim = cluster(3, 2);
    let (m1, r6) = (id(&sim, 1), id(&sim, 6));
    let now = sim.now();
    let n5 = sim.node_mut(5).unwrap();
    n5.set_repl_offset(0);
    n5.nodes.get_mut(&r6).unwrap().repl_offset = 1_000_000;
    n5.nodes.get_mut(&m1).unwrap().flags.insert(NodeFlags::FAIL);
    n5.handle_replica_failover(now);
    let at = n5.election.auth_time.unwrap();
    // fixed = min(500, 1000/30) = 33, random < min(500, 250), rank 1 -> +1000.
    assert!(at >= now + 1033 && at < now + 1033 + 250, "{at} vs {now}");
    assert!(!n5.election.sent);
    n5.handle_timeout(at);
    assert!(n5.election.sent);
    assert_eq!(n5.election.epoch, n5.current_epoch());
}

#[test]
fn replica_validity_factor_blocks_old_replicas() {
    let mut sim = cluster(3, 1);
    let m0 = id(&sim, 0);
    let now = sim.now();
    let r = sim.node_mut(3).unwrap();
    r.nodes.get_mut(&m0).unwrap().flags.insert(NodeFlags::FAIL);
    // Master last heard 1000 + 10000 + 10 * 1000 ms ago, and then some.
    let heard = r.nodes[&m0].data_received;
    r.handle_replica_failover(heard + 21_001 + 1);
    assert!(r.election.auth_time.is_none());
    r.handle_replica_failover(now);
    assert!(r.election.auth_time.is_some());
}

#[test]
fn replica_no_failover_never_starts_an_automatic_election() {
    let mut sim = cluster(3, 1);
    let m0 = id(&sim, 0);
    let now = sim.now();
    let r = sim.node_mut(3).unwrap();
    r.config.replica_no_failover = true;
    assert!(r.header(0).flags.contains(NodeFlags::NOFAILOVER));
    r.nodes.get_mut(&m0).unwrap().flags.insert(NodeFlags::FAIL);
    r.handle_replica_failover(now);
    assert!(r.election.auth_time.is_none());
    assert!(!r.election.sent);
    // A manual failover still works (Redis: only automatic failovers are disabled).
    r.start_manual_failover(now, FailoverMode::Force, m0);
    r.handle_replica_failover(now);
    assert!(r.election.sent);
    // The same replica without the knob schedules an election.
    r.config.replica_no_failover = false;
    r.end_manual_failover();
    r.election = Election::default();
    assert!(!r.header(0).flags.contains(NodeFlags::NOFAILOVER));
    r.handle_replica_failover(now);
    assert!(r.election.auth_time.is_some());
}

#[test]
fn epoch_collision_bumps_the_smaller_id() {
    let mut sim = cluster(3, 0);
    let (a, b) = (id(&sim, 0), id(&sim, 1));
    let hb = header_of(&sim, 1);
    let now = sim.now();
    let (small, big) = if a < b { (0, 1) } else { (1, 0) };
    let n0 = sim.node_mut(0).unwrap();
    let mut h = hb;
    h.config_epoch = n0.config_epoch();
    n0.nodes.get_mut(&b).unwrap().config_epoch = h.config_epoch;
    let before = n0.config_epoch();
    n0.handle_message(now, b, ping(h, vec![])).unwrap();
    if small == 0 {
        assert!(n0.config_epoch() > before, "the smaller id must bump");
    } else {
        assert_eq!(n0.config_epoch(), before, "the bigger id keeps its epoch");
    }
    let _ = big;
}

#[test]
fn stale_claims_get_an_update_and_a_slotless_master_follows() {
    let mut sim = cluster(3, 1);
    let (m0, m1, r3) = (id(&sim, 0), id(&sim, 1), id(&sim, 3));
    let h0 = header_of(&sim, 0);
    let now = sim.now();
    // n1 learnt that r3 took n0's slots with a newer epoch.
    let n1 = sim.node_mut(1).unwrap();
    let slots = n1.nodes[&m0].slots.clone();
    n1.nodes.get_mut(&r3).unwrap().config_epoch = 100;
    n1.nodes.get_mut(&r3).unwrap().flags = NodeFlags::MASTER;
    n1.nodes.get_mut(&r3).unwrap().master = None;
    for s in slots.iter() {
        n1.assign_slot(s, Some(r3));
    }
    drain(n1);
    // n0 still claims them.
    n1.handle_message(now, m0, ping(h0, vec![])).unwrap();
    let (t, _) = drain(n1);
    let update = t.iter().find_map(|t| match &t.message.body {
        Body::Update {
            node,
            config_epoch,
            slots,
        } => Some((*node, *config_epoch, slots.clone())),
        _ => None,
    });
    let (node, epoch, upd_slots) = update.expect("an UPDATE for the stale claim");
    assert_eq!((node, epoch), (r3, 100));
    // n0 applies it: it lost every slot, so it becomes a replica of r3.
    let h1 = header_of(&sim, 1);
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(
        now,
        m1,
        Message {
            header: h1,
            body: Body::Update {
                node,
                config_epoch: epoch,
                slots: upd_slots,
            },
        },
    )
    .unwrap();
    assert!(!n0.is_master());
    assert_eq!(n0.master(), Some(r3));
}

#[test]
fn writes_need_a_lease_from_a_majority() {
    let sim = cluster(3, 0);
    let now = sim.now();
    let n0 = sim.node(0).unwrap();
    let slot = n0.my_slots().iter().next().unwrap();
    assert_eq!(n0.write_permission(now, slot), Ok(()));
    let other = sim.node(1).unwrap().my_slots().iter().next().unwrap();
    assert!(matches!(
        n0.write_permission(now, other),
        Err(WriteRefusal::NotOwner(Some(_)))
    ));
    // Leases run out 900 ms after the last acked ping.
    let later = now + 2000;
    assert!(matches!(
        n0.write_status(later),
        Err(WriteRefusal::NoQuorum {
            acked: 1,
            needed: 2
        })
    ));
    assert_eq!(
        sim.node(3 - 3)
            .unwrap()
            .route(other, KeyPresence::All, false),
        Route::Moved {
            slot: other,
            node: id(&sim, 1)
        }
    );
}

#[test]
fn master_in_minority_goes_down_and_waits_to_rejoin() {
    let mut sim = cluster(3, 0);
    let (b, c) = (id(&sim, 1), id(&sim, 2));
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.nodes.get_mut(&b).unwrap().flags.insert(NodeFlags::PFAIL);
    n0.nodes.get_mut(&c).unwrap().flags.insert(NodeFlags::PFAIL);
    n0.update_state(now);
    assert_eq!(n0.state(), ClusterState::Fail);
    n0.nodes.get_mut(&b).unwrap().flags.remove(NodeFlags::PFAIL);
    n0.nodes.get_mut(&c).unwrap().flags.remove(NodeFlags::PFAIL);
    n0.update_state(now + 999);
    assert_eq!(n0.state(), ClusterState::Fail, "rejoin delay");
    n0.update_state(now + 1000);
    assert_eq!(n0.state(), ClusterState::Ok);
}

#[test]
fn min_replicas_to_write() {
    let mut sim = cluster(3, 1);
    let now = sim.now();
    let r3 = id(&sim, 3);
    let n0 = sim.node_mut(0).unwrap();
    n0.config.min_replicas_to_write = 1;
    n0.config.min_replicas_max_lag = 500;
    assert_eq!(n0.write_status(now), Ok(()));
    let heard = n0.nodes[&r3].data_received;
    assert!(matches!(
        n0.write_status(heard + 501),
        Err(WriteRefusal::NotEnoughReplicas {
            healthy: 0,
            needed: 1
        })
    ));
    n0.config.min_replicas_to_write = 2;
    assert!(matches!(
        n0.write_status(now),
        Err(WriteRefusal::NotEnoughReplicas {
            healthy: 1,
            needed: 2
        })
    ));
}

#[test]
fn manual_failover_pauses_the_master_until_the_replica_catches_up() {
    let mut sim = cluster(3, 1);
    let (m0, r3) = (id(&sim, 0), id(&sim, 3));
    let now = sim.now();
    sim.node_mut(0).unwrap().set_repl_offset(500);
    let r = sim.node_mut(3).unwrap();
    r.set_repl_offset(400);
    r.failover(now, FailoverMode::Default).unwrap();
    let (t, _) = drain(r);
    assert!(t
        .iter()
        .any(|t| t.to == Some(m0) && t.message.body == Body::MfStart));
    let h3 = header_of(&sim, 3);
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(
        now,
        r3,
        Message {
            header: h3,
            body: Body::MfStart,
        },
    )
    .unwrap();
    let slot = n0.my_slots().iter().next().unwrap();
    assert_eq!(n0.write_permission(now, slot), Err(WriteRefusal::Paused));
    let (t, _) = drain(n0);
    let paused = t.into_iter().find(|t| t.to == Some(r3)).unwrap().message;
    assert!(paused.header.mflags & mflags::PAUSED != 0);
    assert_eq!(paused.header.repl_offset, 500);
    let r = sim.node_mut(3).unwrap();
    r.handle_message(now, m0, paused).unwrap();
    assert!(!r.election.sent, "must not start behind the master");
    r.set_repl_offset(500);
    r.handle_timeout(now + 1);
    assert!(r.election.sent, "caught up: election starts at once");
    // Manual failover times out after 5 s on the master.
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_timeout(now + 5001);
    assert_eq!(
        n0.write_status(now + 5001).err(),
        Some(WriteRefusal::NoQuorum {
            acked: 1,
            needed: 2
        })
    );
    assert!(n0.manual.end.is_none());
}

#[test]
fn takeover_bumps_epoch_without_votes() {
    let mut sim = cluster(3, 1);
    let now = sim.now();
    let max = (0..6)
        .map(|i| sim.node(i).unwrap().config_epoch())
        .max()
        .unwrap();
    let r = sim.node_mut(3).unwrap();
    r.failover(now, FailoverMode::Takeover).unwrap();
    assert!(r.is_master());
    assert!(r.config_epoch() > max);
    assert_eq!(r.my_slots().len(), 5461);
}

#[test]
fn failover_commands_check_their_preconditions() {
    let mut sim = cluster(3, 1);
    let now = sim.now();
    assert_eq!(
        sim.node_mut(0)
            .unwrap()
            .failover(now, FailoverMode::Default),
        Err(CommandError::NotReplica)
    );
    let m0 = id(&sim, 0);
    let r = sim.node_mut(3).unwrap();
    r.nodes.get_mut(&m0).unwrap().flags.insert(NodeFlags::FAIL);
    assert_eq!(
        r.failover(now, FailoverMode::Default),
        Err(CommandError::MasterDown)
    );
    assert_eq!(
        r.add_slots(now, &SlotSet::from_range(0..1)),
        Err(CommandError::NotMaster)
    );
    let n1 = sim.node_mut(1).unwrap();
    assert!(matches!(
        n1.add_slots(now, &SlotSet::from_range(0..1)),
        Err(CommandError::SlotBusy { slot: 0, .. })
    ));
    assert_eq!(n1.set_config_epoch(9), Err(CommandError::EpochLocked));
    assert_eq!(n1.replicate(now, m0), Err(CommandError::HasSlots));
}

#[test]
fn forget_bans_the_node_from_gossip() {
    let mut sim = cluster(3, 0);
    let (b, c) = (id(&sim, 1), id(&sim, 2));
    let hb = header_of(&sim, 1);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.forget(now, c).unwrap();
    assert!(n0.node(c).is_none());
    n0.handle_message(now, b, ping(hb, vec![report(c, NodeFlags::MASTER)]))
        .unwrap();
    assert!(n0.node(c).is_none(), "gossip re-added a forgotten node");
    assert_eq!(n0.forget(now, n0.id()), Err(CommandError::IsMyself));
}

#[test]
fn gossip_introduces_unknown_nodes_by_handshake() {
    let mut sim = cluster(3, 0);
    let b = id(&sim, 1);
    let hb = header_of(&sim, 1);
    let now = sim.now();
    let stranger = NodeId([7; 20]);
    let n0 = sim.node_mut(0).unwrap();
    drain(n0);
    n0.handle_message(now, b, ping(hb, vec![report(stranger, NodeFlags::MASTER)]))
        .unwrap();
    assert!(flags(n0, stranger).contains(NodeFlags::HANDSHAKE));
    n0.handle_timeout(now + 100);
    let (t, _) = drain(n0);
    assert!(t
        .iter()
        .any(|t| t.to == Some(stranger) && matches!(t.message.body, Body::Meet { .. })));
    // Never answered: dropped after the handshake timeout.
    n0.handle_timeout(now + 1200);
    assert!(n0.node(stranger).is_none());
}

#[test]
fn restart_keeps_epochs_vote_and_slots() {
    let (mut sim, _, r5, _) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let q = request(&sim, 5, e, false);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(now, r5, q).unwrap();
    let saved = n0.poll_save().unwrap();
    let cfg = n0.config.clone();
    let slots = n0.my_slots().clone();
    let back = Node::restore(cfg, &saved, "10.0.0.0:7000", now + 10, 1);
    assert_eq!(back.current_epoch(), e);
    assert_eq!(back.last_vote_epoch(), e);
    assert_eq!(back.my_slots(), &slots);
    assert!(back.is_master());
    // A restarted master writes only after fresh acknowledgements.
    assert!(matches!(
        back.write_status(now + 10),
        Err(WriteRefusal::NoQuorum { .. }) | Err(WriteRefusal::ClusterDown)
    ));
}

#[test]
fn a_master_voting_for_its_own_replica_stops_writing() {
    let mut sim = cluster(3, 1);
    let r3 = id(&sim, 3);
    let now = sim.now();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let q = request(&sim, 3, e, true);
    let m1 = id(&sim, 1);
    let n0 = sim.node_mut(0).unwrap();
    // Itself and n2 make the majority of three...
    n0.nodes.get_mut(&m1).unwrap().lease_until = Instant::ZERO;
    assert_eq!(n0.write_status(now), Ok(()));
    n0.handle_message(now, r3, q).unwrap();
    assert_eq!(acks(&drain(n0).0), vec![(Some(r3), e)]);
    assert!(matches!(
        n0.write_status(now),
        Err(WriteRefusal::NoQuorum { .. })
    ));
}

#[test]
fn poll_timeout_always_moves_forward() {
    let mut sim = cluster(3, 1);
    let m0 = id(&sim, 0);
    let r = sim.node_mut(3).unwrap();
    r.nodes.get_mut(&m0).unwrap().flags.insert(NodeFlags::FAIL);
    // Master data far too old: the election is scheduled but may never start.
    let mut now = r.nodes[&m0].data_received + 30_000;
    for _ in 0..100 {
        r.handle_timeout(now);
        let next = r.poll_timeout();
        assert!(next > now, "timer stuck at {next} (now {now})");
        now = next;
    }
}

#[test]
fn pings_whoever_was_not_heard_for_half_node_timeout() {
    let mut sim = cluster(3, 0);
    let (b, c) = (id(&sim, 1), id(&sim, 2));
    let now = sim.now() + 1;
    let n0 = sim.node_mut(0).unwrap();
    drain(n0);
    for r in n0.nodes.values_mut() {
        r.ping_sent = None;
        r.pong_received = now;
    }
    n0.nodes.get_mut(&b).unwrap().pong_received = Instant::from_millis(now.as_millis() - 501);
    n0.last_random_ping = now;
    n0.next_cron = now;
    n0.handle_timeout(now);
    let pinged: Vec<_> = drain(n0)
        .0
        .into_iter()
        .filter(|t| matches!(t.message.body, Body::Ping { .. }))
        .map(|t| t.to)
        .collect();
    assert_eq!(pinged, vec![Some(b)]);
    assert_eq!(n0.nodes[&b].ping_sent, Some(now));
    // Once a second, the node with the oldest pong among a random few.
    let later = now + 1000;
    // c's pong is 300 ms old: not due by the half-timeout rule, only by the random pick.
    n0.nodes.get_mut(&c).unwrap().pong_received = Instant::from_millis(later.as_millis() - 300);
    n0.next_cron = later;
    for r in n0.nodes.values_mut() {
        r.data_received = later;
        r.ping_sent = None;
        if r.id != c {
            r.pong_received = later;
        }
    }
    n0.handle_timeout(later);
    let pinged: Vec<_> = drain(n0)
        .0
        .into_iter()
        .filter(|t| matches!(t.message.body, Body::Ping { .. }))
        .map(|t| t.to)
        .collect();
    assert_eq!(pinged, vec![Some(c)]);
}

// ------------------------------------------------------------- replica migration

/// 3 masters: A = n0 with replicas n3 and n5, B = n1 with replica n4, C = n2 with none.
/// n5 started as C's replica and was moved to A by the operator, so C lost its replica
/// by a move, not a failure, and is no orphan.
fn migration_cluster(tune: impl FnOnce(&mut Config)) -> Sim {
    let mut cfg = SimConfig::new(42, 3, 1);
    tune(&mut cfg.node);
    let mut sim = Sim::new(cfg);
    sim.bootstrap().unwrap();
    sim.replicate(5, 0).unwrap();
    sim.run_for(2000).unwrap();
    assert_eq!(masters_of(&sim, &[3, 4, 5]), ids(&sim, &[0, 1, 0]));
    sim
}

/// What each of `nodes` replicates, in its own view.
fn masters_of(sim: &Sim, nodes: &[usize]) -> Vec<Option<NodeId>> {
    nodes
        .iter()
        .map(|&i| sim.node(i).and_then(|n| n.master()))
        .collect()
}

fn ids(sim: &Sim, nodes: &[usize]) -> Vec<Option<NodeId>> {
    nodes.iter().map(|&i| Some(id(sim, i))).collect()
}

/// A's two replicas, the one with the smaller id first.
fn spares(sim: &Sim) -> (usize, usize) {
    if id(sim, 3) < id(sim, 5) {
        (3, 5)
    } else {
        (5, 3)
    }
}

/// Crashes B's replica n4 and waits until `watcher` no longer counts it as working,
/// plus a tick for the orphan timer to start.
fn fail_b_replica(sim: &mut Sim, watcher: usize) {
    let r4 = id(sim, 4);
    sim.crash(4);
    sim.run_until(5000, "n4 stops working", |s| {
        flags(s.node(watcher).unwrap(), r4).intersects(NodeFlags::PFAIL | NodeFlags::FAIL)
    })
    .unwrap();
    sim.run_for(100).unwrap();
}

fn orphaned_since(sim: &Sim, viewer: usize, master: usize) -> Option<Instant> {
    sim.node(viewer).unwrap().nodes[&id(sim, master)].orphaned_since
}

#[test]
fn orphaned_master_gets_the_smallest_spare_replica_after_the_delay() {
    let mut sim = migration_cluster(|_| {});
    let (first, second) = spares(&sim);
    fail_b_replica(&mut sim, first);
    let since = orphaned_since(&sim, first, 1).expect("B is orphaned once n4 fails");
    let delay = sim.node(first).unwrap().config().replica_migration_delay;
    assert_eq!(delay, 5000);
    // Not before the delay has passed...
    sim.run_for((since + delay).since(sim.now())).unwrap();
    assert_eq!(masters_of(&sim, &[first, second]), ids(&sim, &[0, 0]));
    // ...and at the first tick after it, only the smallest id moves, through the
    // REPLICATE path (the same RoleChanged event).
    sim.run_until(500, "the smaller spare moves to B", |s| {
        s.node(first).unwrap().master() == Some(id(s, 1))
    })
    .unwrap();
    assert!(sim.now().since(since) > delay);
    assert_eq!(masters_of(&sim, &[second]), ids(&sim, &[0]));
    assert!(
        sim.trace()
            .contains(&format!("n{first}: now replica of n1")),
        "{}",
        sim.trace()
    );
    // B is filled for everyone; A is down to one replica, which stays.
    sim.run_for(delay + 2000).unwrap();
    assert_eq!(masters_of(&sim, &[first, second]), ids(&sim, &[1, 0]));
    for viewer in [0, 1, 2, 3, 5] {
        assert_eq!(orphaned_since(&sim, viewer, 1), None, "n{viewer}");
    }
}

#[test]
fn migration_barrier_keeps_replicas_home() {
    let mut sim = migration_cluster(|c| c.migration_barrier = 2);
    let (first, second) = spares(&sim);
    fail_b_replica(&mut sim, first);
    sim.run_for(5000 + 2000).unwrap();
    assert!(orphaned_since(&sim, first, 1).is_some());
    assert_eq!(masters_of(&sim, &[first, second]), ids(&sim, &[0, 0]));
}

#[test]
fn replica_migration_can_be_disabled() {
    let mut sim = migration_cluster(|c| c.allow_replica_migration = false);
    let (first, second) = spares(&sim);
    fail_b_replica(&mut sim, first);
    sim.run_for(5000 + 2000).unwrap();
    assert!(orphaned_since(&sim, first, 1).is_some());
    assert_eq!(masters_of(&sim, &[first, second]), ids(&sim, &[0, 0]));
}

#[test]
fn a_masters_only_replica_never_migrates() {
    // Even with no barrier at all: a move needs a master with at least two replicas.
    let mut cfg = SimConfig::new(42, 3, 1);
    cfg.node.migration_barrier = 0;
    let mut sim = Sim::new(cfg);
    sim.bootstrap().unwrap();
    sim.run_for(1000).unwrap();
    fail_b_replica(&mut sim, 3);
    sim.run_for(5000 + 2000).unwrap();
    assert!(orphaned_since(&sim, 3, 1).is_some());
    assert!(orphaned_since(&sim, 5, 1).is_some());
    assert_eq!(masters_of(&sim, &[3, 5]), ids(&sim, &[0, 2]));
}

#[test]
fn a_master_whose_replica_moved_away_is_not_orphaned() {
    let mut sim = migration_cluster(|_| {});
    sim.run_for(5000 + 1000).unwrap();
    let c = id(&sim, 2);
    for viewer in [0, 1, 3, 4, 5] {
        let rec = &sim.node(viewer).unwrap().nodes[&c];
        assert!(!rec.migrate_to && rec.orphaned_since.is_none(), "n{viewer}");
    }
    assert_eq!(masters_of(&sim, &[3, 4, 5]), ids(&sim, &[0, 1, 0]));
}

#[test]
fn a_promoted_replica_left_alone_gets_a_spare() {
    let mut sim = migration_cluster(|_| {});
    let (first, second) = spares(&sim);
    sim.crash(1);
    sim.run_until(10_000, "n4 takes over B's slots", |s| {
        s.node(4)
            .is_some_and(|n| n.is_master() && !n.my_slots().is_empty())
    })
    .unwrap();
    // n4 has no replica: it was B's only one, and B itself is down.
    sim.run_until(5000 + 3000, "a spare moves to n4", |s| {
        s.node(first).unwrap().master() == Some(id(s, 4))
    })
    .unwrap();
    assert_eq!(masters_of(&sim, &[second]), ids(&sim, &[0]));
    assert!(sim.node(first).unwrap().nodes[&id(&sim, 4)].migrate_to);
}

/// The stale owner found by the `slot_moves` simulation: n2 misses n1's claim of a slot
/// it took from n0, then hears n0 take other slots (a configEpoch above n1's) while no
/// longer claiming that slot. n1's claim, older than n0's epoch, must still win.
#[test]
fn a_slot_its_owner_stopped_claiming_goes_to_the_next_claimant() {
    let mut sim = cluster(3, 0);
    let (a, b) = (id(&sim, 0), id(&sim, 1));
    let (mut ha, mut hb) = (header_of(&sim, 0), header_of(&sim, 1));
    let slot = ha.slots.iter().next().unwrap();
    // n1 took `slot` (epoch 9); n0 then took others and reached epoch 10.
    hb.slots.insert(slot);
    hb.config_epoch = 9;
    hb.current_epoch = 9;
    ha.slots.remove(slot);
    ha.config_epoch = 10;
    ha.current_epoch = 10;
    let now = sim.now();
    let n2 = sim.node_mut(2).unwrap();
    drain(n2);
    n2.handle_message(now, a, ping(ha, vec![])).unwrap();
    // The binding stays (no coverage gap) but nobody claims the slot now.
    assert_eq!(n2.slots().owner(slot), Some(a));
    assert!(n2.slots().is_unclaimed(slot));
    assert_eq!(n2.state(), ClusterState::Ok);
    n2.handle_message(now, b, ping(hb, vec![])).unwrap();
    assert_eq!(n2.slots().owner(slot), Some(b));
    assert!(!n2.slots().is_unclaimed(slot));
    let (t, _) = drain(n2);
    assert!(
        !t.iter()
            .any(|t| matches!(t.message.body, Body::Update { .. })),
        "no UPDATE for a claim on a slot its old owner dropped"
    );
    // A delayed message n1 sent before it took the slot (its old epoch, without the
    // slot) is not news: the slot stays claimed by n1.
    let old_b = header_of(&sim, 1);
    assert!(old_b.config_epoch < 9 && !old_b.slots.contains(slot));
    let n2 = sim.node_mut(2).unwrap();
    n2.handle_message(now, b, ping(old_b, vec![])).unwrap();
    assert_eq!(n2.slots().owner(slot), Some(b));
    assert!(!n2.slots().is_unclaimed(slot));
}

/// The same stale owner reached through failovers and a restart (the
/// `chaos_with_manual_failovers` seed 8458334529955945114): n2 restarts from a state
/// that binds n0's slots to n0. Meanwhile n0's replica n3 took them (epoch 19) and n0
/// took over n1's shard (epoch 20). Hearing n0 first, n2 must still give n3 the slots.
#[test]
fn a_restarted_node_gives_a_slot_its_saved_owner_dropped_to_the_next_claimant() {
    let mut sim = cluster(3, 1);
    let (m0, r3) = (id(&sim, 0), id(&sim, 3));
    let (old0, old1) = (
        sim.node(0).unwrap().my_slots().clone(),
        sim.node(1).unwrap().my_slots().clone(),
    );
    let mut h0 = header_of(&sim, 0);
    h0.slots = old1.clone();
    h0.config_epoch = 20;
    h0.current_epoch = 20;
    let mut h3 = header_of(&sim, 3);
    h3.master = None;
    h3.flags = NodeFlags::MASTER;
    h3.slots = old0.clone();
    h3.config_epoch = 19;
    h3.current_epoch = 19;
    let now = sim.now();
    let n2 = sim.node_mut(2).unwrap();
    let saved = n2.persistent_state();
    let mut back = Node::restore(n2.config.clone(), &saved, "10.0.0.2:7000", now, 7);
    back.handle_message(now, m0, ping(h0, vec![])).unwrap();
    assert!(old1.iter().all(|s| back.slots().owner(s) == Some(m0)));
    assert!(old0.iter().all(|s| back.slots().is_unclaimed(s)));
    back.handle_message(now, r3, ping(h3, vec![])).unwrap();
    assert!(old0.iter().all(|s| back.slots().owner(s) == Some(r3)));
    assert!(!back.slots().is_unclaimed(old0.iter().next().unwrap()));
}

/// A voter's promise to withhold acknowledgements from the master it voted to replace
/// does not end with time (a partition may hide the winner for any length of time),
/// only on word from the candidate that it lost, and it survives a restart.
#[test]
fn a_voters_promise_ends_on_the_candidates_word_not_by_time() {
    let (mut sim, m1, r5, _) = vote_setup();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let q = request(&sim, 5, e, false);
    let mut lost = sim.node(5).unwrap().header(mflags::NO_ELECTION);
    let now = sim.now();
    let n0 = sim.node_mut(0).unwrap();
    n0.handle_message(now, r5, q).unwrap();
    assert_eq!(acks(&drain(n0).0), vec![(Some(r5), e)]);
    n0.nodes.get_mut(&m1).unwrap().flags.remove(NodeFlags::FAIL);
    let mut h = n0.header(0);
    h.sender = m1;
    h.addr = n0.nodes[&m1].addr.clone();
    h.slots = n0.nodes[&m1].slots.clone();
    h.config_epoch = n0.nodes[&m1].config_epoch;
    let acked = |n0: &mut Node, at: Instant, h: &Header| {
        n0.handle_message(at, m1, ping(h.clone(), vec![])).unwrap();
        drain(n0).0.iter().any(|t| {
            matches!(
                t.message.body,
                Body::Pong {
                    claims_acked: true,
                    ..
                }
            )
        })
    };
    let later = now + 60_000;
    assert!(!acked(n0, later, &h), "a minute later, still no ack");
    // A restart keeps the promise and its candidate.
    let saved = n0.persistent_state();
    assert_eq!(saved.withheld_acks[0].candidate, Some(r5));
    let mut back = Node::restore(n0.config.clone(), &saved, "10.0.0.0:7000", later, 3);
    assert!(!acked(&mut back, later, &h));
    // A header from the candidate from before the election (older currentEpoch), or
    // with its election window open, is no news.
    lost.current_epoch = e - 1;
    back.handle_message(later, r5, ping(lost.clone(), vec![]))
        .unwrap();
    let mut running = lost.clone();
    running.current_epoch = e;
    running.mflags = 0;
    back.handle_message(later, r5, ping(running, vec![]))
        .unwrap();
    assert!(!acked(&mut back, later, &h));
    // The candidate, still a replica of n1 at epoch e with no election open, lost.
    lost.current_epoch = e;
    back.handle_message(later, r5, ping(lost, vec![])).unwrap();
    assert!(
        acked(&mut back, later, &h),
        "acks resume once the candidate lost"
    );
}

/// A master that a peer's header lists as voted against abstains (no acks for anyone,
/// no self-count) until the candidate says it lost: two replaced masters on one side
/// of a partition must not lease each other their old seats.
#[test]
fn a_master_told_it_was_voted_against_abstains_until_the_candidate_lost() {
    let mut sim = cluster(3, 1);
    let (m0, m1, m2, r3) = (id(&sim, 0), id(&sim, 1), id(&sim, 2), id(&sim, 3));
    let now = sim.now();
    let e = sim.node(0).unwrap().current_epoch() + 1;
    let mut from_voter = header_of(&sim, 2);
    from_voter.current_epoch = e;
    from_voter.replacements = vec![crate::proto::codec::Replacement {
        master: m0,
        epoch: e,
        candidate: r3,
    }];
    let mut lost = sim.node(3).unwrap().header(0);
    lost.current_epoch = e;
    assert_ne!(lost.mflags & mflags::NO_ELECTION, 0);
    let h1 = header_of(&sim, 1);
    let n0 = sim.node_mut(0).unwrap();
    // Itself and n2 make the majority of three.
    n0.nodes.get_mut(&m1).unwrap().lease_until = Instant::ZERO;
    assert_eq!(n0.write_status(now), Ok(()));
    let acked = |n0: &mut Node, h: &Header| {
        n0.handle_message(now, m1, ping(h.clone(), vec![])).unwrap();
        drain(n0).0.iter().any(|t| {
            matches!(
                t.message.body,
                Body::Pong {
                    claims_acked: true,
                    ..
                }
            )
        })
    };
    assert!(acked(n0, &h1));
    n0.handle_message(now, m2, ping(from_voter, vec![]))
        .unwrap();
    drain(n0);
    assert!(
        matches!(n0.write_status(now), Err(WriteRefusal::NoQuorum { .. })),
        "it no longer counts itself"
    );
    assert!(!acked(n0, &h1), "it acknowledges nobody");
    assert!(n0
        .persistent_state()
        .withheld_acks
        .iter()
        .any(|w| w.master == m0));
    n0.handle_message(now, r3, ping(lost, vec![])).unwrap();
    drain(n0);
    assert!(acked(n0, &h1), "the candidate lost: duties resume");
    assert_eq!(n0.write_status(now), Ok(()));
}

/// The headers after n2 handed all its slots to n0: n0's claim (its epoch bumped),
/// and n2's as n0's replica, announcing n0's slots and configEpoch.
fn handed_over(sim: &Sim) -> (Header, Header) {
    let m0 = id(sim, 0);
    let mut h0 = header_of(sim, 0);
    for s in sim.node(2).unwrap().my_slots().iter() {
        h0.slots.insert(s);
    }
    h0.config_epoch = 10;
    h0.current_epoch = 10;
    let mut h2 = header_of(sim, 2);
    h2.flags = NodeFlags::REPLICA;
    h2.master = Some(m0);
    h2.slots = h0.slots.clone();
    h2.config_epoch = 10;
    h2.current_epoch = 10;
    (h0, h2)
}

/// The gap found by the `slot_moves` simulation (seed 4350273523730244377): n2 hands
/// its last slots to n0 and turns replica of n0; n1 hears n2's new role before n0's
/// claim. The slots stay bound to n2, unclaimed, so n1's cluster state stays OK, and
/// n0's claim, when it comes, takes them.
#[test]
fn a_master_turned_replica_keeps_its_slots_bound_until_the_takers_claim() {
    let mut sim = cluster(3, 0);
    let (m0, m2) = (id(&sim, 0), id(&sim, 2));
    let old2 = sim.node(2).unwrap().my_slots().clone();
    let slot = old2.iter().next().unwrap();
    let (h0, h2) = handed_over(&sim);
    let now = sim.now();
    let n1 = sim.node_mut(1).unwrap();
    assert_eq!(n1.state(), ClusterState::Ok);
    drain(n1);
    n1.handle_message(now, m2, ping(h2.clone(), vec![]))
        .unwrap();
    assert!(!n1.nodes[&m2].is_master());
    assert!(old2.iter().all(|s| n1.slots().owner(s) == Some(m2)));
    assert!(old2.iter().all(|s| n1.slots().is_unclaimed(s)));
    assert_eq!(n1.state(), ClusterState::Ok, "no coverage gap");
    n1.handle_message(now + 2, m0, ping(h0.clone(), vec![]))
        .unwrap();
    assert!(old2.iter().all(|s| n1.slots().owner(s) == Some(m0)));
    assert!(!n1.slots().is_unclaimed(slot));
    assert!(n1.nodes[&m2].slots.is_empty());
    assert_eq!(n1.state(), ClusterState::Ok);
}

/// If the taker's claim never comes (it died, or the claim was lost), the slots a
/// master turned replica holds are unassigned after node_timeout, as Redis unassigns
/// them at once; a claim that comes later takes them. A restart holds them again for
/// node_timeout from the restart. A replica of the master turned replica does not
/// run for its slots.
#[test]
fn slots_a_replica_holds_are_released_after_node_timeout() {
    let mut sim = cluster(3, 1);
    let (m0, m2) = (id(&sim, 0), id(&sim, 2));
    let old2 = sim.node(2).unwrap().my_slots().clone();
    let (h0, h2) = handed_over(&sim);
    let now = sim.now();
    let n1 = sim.node_mut(1).unwrap();
    let nt = n1.config().node_timeout;
    n1.handle_message(now, m2, ping(h2.clone(), vec![]))
        .unwrap();
    drain(n1);
    let saved = n1.persistent_state();
    n1.handle_timeout(now + nt / 2);
    assert!(old2.iter().all(|s| n1.slots().owner(s) == Some(m2)));
    n1.handle_timeout(now + nt + nt / 10);
    assert!(old2.iter().all(|s| n1.slots().owner(s).is_none()));
    assert!(n1.nodes[&m2].slots.is_empty());
    let (_, events) = drain(n1);
    assert!(events.contains(&Event::SlotsChanged));
    n1.handle_message(now + nt + nt / 5, m0, ping(h0, vec![]))
        .unwrap();
    assert!(old2.iter().all(|s| n1.slots().owner(s) == Some(m0)));

    // Restored from a state saved while it held them: held again, unclaimed, and
    // released node_timeout after the restart.
    let cfg = sim.node(1).unwrap().config().clone();
    let later = now + 5 * nt;
    let mut back = Node::restore(cfg, &saved, "10.0.0.1:7000", later, 3);
    assert!(old2.iter().all(|s| back.slots().owner(s) == Some(m2)));
    assert!(old2.iter().all(|s| back.slots().is_unclaimed(s)));
    back.handle_timeout(later + nt / 2);
    assert!(old2.iter().all(|s| back.slots().owner(s) == Some(m2)));
    back.handle_timeout(later + nt + nt / 10);
    assert!(old2.iter().all(|s| back.slots().owner(s).is_none()));

    // n5, n2's replica, hears n2's new role before n0's claim and sees n2 fail: it
    // holds n2's slots bound to n2 but does not run for them, and its header claims
    // none of them.
    let n5 = sim.node_mut(5).unwrap();
    assert_eq!(n5.master(), Some(m2));
    n5.handle_message(now, m2, ping(h2, vec![])).unwrap();
    assert!(old2.iter().all(|s| n5.slots().owner(s) == Some(m2)));
    n5.nodes.get_mut(&m2).unwrap().flags.insert(NodeFlags::FAIL);
    assert!(!n5.election_pending());
    // Past the longest election delay (fixed + random < 0.3 node_timeout), before the
    // slots are released.
    for t in [nt / 10, nt / 2, nt * 9 / 10] {
        n5.handle_timeout(now + t);
    }
    let (_, events) = drain(n5);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::ElectionStarted(_))),
        "{events:?}"
    );
    assert!(n5.nodes[&m2].flags.contains(NodeFlags::FAIL));
    assert!(n5.header(0).slots.is_empty());
    assert_eq!(n5.master(), Some(m2));
}
