//! The cluster bus messages, mirroring Redis's `clusterMsg` types.

use crate::proto::id::{NodeFlags, NodeId};
use crate::proto::slots::{Slot, SlotSet};

/// One message on the cluster bus: a header every type carries and a typed body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// What the sender says about itself.
    pub header: Header,
    /// The type-specific part.
    pub body: Body,
}

/// Header bits that are not node flags (Redis's `mflags`).
pub mod mflags {
    /// The sending master paused its clients for a manual failover.
    pub const PAUSED: u8 = 1;
    /// A failover auth request that must be acked even though the master is not FAIL.
    pub const FORCEACK: u8 = 1 << 1;
    /// The sending replica cannot win any election right now (none is running, or the
    /// last one's window closed). A master that voted for its own replica resumes its
    /// duties when it sees this from that replica.
    pub const NO_ELECTION: u8 = 1 << 2;
    /// Every bit this version knows.
    pub const ALL: u8 = PAUSED | FORCEACK | NO_ELECTION;
}

/// The part of every message that describes the sender, as Redis's header does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// The sender's id. A driver with authenticated peers must drop messages whose
    /// sender differs from the peer's authenticated identity.
    pub sender: NodeId,
    /// Where the sender can be reached (opaque to the protocol, e.g. `"10.0.0.1:7000"`).
    pub addr: String,
    /// The sender's flags about itself (`MASTER` or `REPLICA`, maybe `NOFAILOVER`).
    pub flags: NodeFlags,
    /// The sender's currentEpoch.
    pub current_epoch: u64,
    /// The sender's configEpoch, or its master's if the sender is a replica.
    pub config_epoch: u64,
    /// The sender's replication offset.
    pub repl_offset: u64,
    /// The master the sender replicates, if it is a replica.
    pub master: Option<NodeId>,
    /// The slots the sender serves, or its master's if it is a replica.
    pub slots: SlotSet,
    /// Whether the sender sees the cluster state as OK.
    pub state_ok: bool,
    /// [`mflags`] bits.
    pub mflags: u8,
    /// The sender's open votes against masters: it voted for a replacement and does
    /// not know the outcome yet. A master that finds itself here abstains (no
    /// acknowledgements, votes or self-count) until it learns the outcome, since its
    /// seat may already be the winner's.
    pub replacements: Vec<Replacement>,
}

/// A vote whose outcome the sender does not know: in `epoch` it voted for
/// `candidate` to replace `master`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replacement {
    /// The master voted against.
    pub master: NodeId,
    /// The election's epoch.
    pub epoch: u64,
    /// The replica voted for.
    pub candidate: NodeId,
}

/// What the sender knows about a third node, attached to PING, PONG and MEET.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gossip {
    /// The node described.
    pub node: NodeId,
    /// Its address.
    pub addr: String,
    /// Its flags as the sender sees them; `PFAIL`/`FAIL` here are failure reports.
    pub flags: NodeFlags,
}

/// A slot a master is moving, told to its replicas so the state survives a failover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MigrationState {
    /// The slot.
    pub slot: Slot,
    /// True for MIGRATING (to `peer`), false for IMPORTING (from `peer`).
    pub migrating: bool,
    /// The other side of the move.
    pub peer: NodeId,
}

/// The type-specific part of a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Body {
    /// Liveness probe and gossip carrier; answered with [`Body::Pong`].
    Ping {
        /// The sender's clock when it sent this ping, echoed back in the pong.
        sent_at: u64,
        /// Gossip about other nodes.
        gossip: Vec<Gossip>,
        /// The sender's slot moves (only sent to its own replicas).
        migrations: Vec<MigrationState>,
    },
    /// Answer to [`Body::Ping`] or [`Body::Meet`].
    Pong {
        /// The `sent_at` of the ping answered (0 for an unsolicited pong).
        echo: u64,
        /// The responder, a healthy master in its own view, agrees with every slot
        /// claim in the ping's header. A master counts these to keep its write lease.
        claims_acked: bool,
        /// Gossip about other nodes.
        gossip: Vec<Gossip>,
        /// The sender's slot moves (only sent to its own replicas).
        migrations: Vec<MigrationState>,
    },
    /// Like a ping, but asks an unknown receiver to add the sender to its table.
    Meet {
        /// The sender's clock at sending.
        sent_at: u64,
        /// Gossip about other nodes.
        gossip: Vec<Gossip>,
    },
    /// The sender marked `node` as FAIL; receivers mark it FAIL too.
    Fail {
        /// The failing node.
        node: NodeId,
    },
    /// The receiver claims slots with a stale configEpoch; here is the newer owner.
    Update {
        /// The owner with the newer claim.
        node: NodeId,
        /// Its configEpoch.
        config_epoch: u64,
        /// The slots it serves.
        slots: SlotSet,
    },
    /// A replica asks masters for a vote; the header carries its master's claims.
    FailoverAuthRequest,
    /// A master's vote for the receiver in election `epoch`.
    FailoverAuthAck {
        /// The election (currentEpoch) this vote is for. Votes for another epoch never
        /// count, which keeps a late ack from an older election out of a newer one.
        epoch: u64,
    },
    /// A replica asks its master to pause writes for a manual failover.
    MfStart,
}

impl Body {
    /// The one-byte type code on the wire.
    pub fn type_code(&self) -> u8 {
        match self {
            Body::Ping { .. } => 0,
            Body::Pong { .. } => 1,
            Body::Meet { .. } => 2,
            Body::Fail { .. } => 3,
            Body::Update { .. } => 4,
            Body::FailoverAuthRequest => 5,
            Body::FailoverAuthAck { .. } => 6,
            Body::MfStart => 7,
        }
    }

    /// The type's name, as Redis logs it.
    pub fn type_name(&self) -> &'static str {
        match self {
            Body::Ping { .. } => "ping",
            Body::Pong { .. } => "pong",
            Body::Meet { .. } => "meet",
            Body::Fail { .. } => "fail",
            Body::Update { .. } => "update",
            Body::FailoverAuthRequest => "auth-req",
            Body::FailoverAuthAck { .. } => "auth-ack",
            Body::MfStart => "mfstart",
        }
    }
}
