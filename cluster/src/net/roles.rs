//! Certificate roles: what the holder of a certificate may do on the mesh.
//!
//! Every certificate the cluster CA issues names its roles as DNS subject alternative
//! names `<role>.role.larder`, next to its `<hex id>.node.larder` name (the same
//! X.509 field the node id uses, so the certificate parser already in the tree reads
//! both). The receiver checks them:
//!
//! | role     | may                                                                 |
//! |----------|---------------------------------------------------------------------|
//! | `node`   | speak the cluster bus and replication, serve as a node (the server side of every connection), forward reads and writes, and the node-to-node steps of a slot move (`SetSlot(s)`, `Restore`, `Adopt`) |
//! | `admin`  | every administrative request (`Meet`, `AddSlots`, `Failover`, `DropSlotKeys`, `Shutdown`, ...), reads and writes; not the bus or replication |
//! | `client` | reads (`Get`, `Contains`, `Ttl`, `Len`, `Wait`) and read-only queries (`Nodes`, `Info`, `KeyCounts`); nothing else |
//!
//! A certificate may carry several roles. One that names a role this version does not
//! know is refused (so a newer role is never mistaken for an older, weaker one).
//!
//! Certificates issued before roles existed name none. They are taken as `node` and
//! `admin` (what every certificate could do then), so a running cluster keeps working
//! through an upgrade, and flagged [`PeerCert::legacy`]: nodes log a warning for each
//! such connection, and a node configured with `allow_roleless = false`
//! ([`super::NetConfig::allow_roleless`]) refuses them. Re-issue certificates with
//! roles, then revoke the old ones (see `docs/operations.md`).

use std::fmt;

use rustls::pki_types::CertificateDer;

use super::certs::node_id_from_cert;
use super::NetError;
use crate::proto::NodeId;

/// The DNS-name suffix under which roles are named.
pub const ROLE_NAME_SUFFIX: &str = ".role.larder";

/// One role a certificate can carry (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// A cluster node: bus, replication, forwarded operations, slot-move steps.
    Node,
    /// An administrator: every administrative request, reads and writes.
    Admin,
    /// A read-only client: reads and read-only queries.
    Client,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 3] = [Role::Node, Role::Admin, Role::Client];

    /// The role's name: `node`, `admin` or `client`.
    pub fn name(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::Admin => "admin",
            Role::Client => "client",
        }
    }

    /// The DNS name that carries the role in a certificate: `<name>.role.larder`.
    pub fn dns_name(self) -> String {
        format!("{}{ROLE_NAME_SUFFIX}", self.name())
    }

    fn bit(self) -> u8 {
        match self {
            Role::Node => 1,
            Role::Admin => 2,
            Role::Client => 4,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = NetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| {
                NetError::Certificate(format!("unknown role {s:?} (known: node, admin, client)"))
            })
    }
}

/// A set of roles.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Roles(u8);

impl Roles {
    /// No role.
    pub const NONE: Roles = Roles(0);
    /// What a certificate without roles is taken for: `node` and `admin`.
    pub const LEGACY: Roles = Roles(1 | 2);

    /// The set of `roles`.
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether any of `roles` is in the set.
    pub fn any(self, roles: &[Role]) -> bool {
        roles.iter().any(|&r| self.contains(r))
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }
}

impl fmt::Display for Roles {
    /// `node+admin`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        for (i, r) in self.iter().enumerate() {
            if i > 0 {
                f.write_str("+")?;
            }
            f.write_str(r.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Roles({self})")
    }
}

/// What a verified certificate says about its holder: its node id and roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCert {
    /// The node id the certificate names.
    pub id: NodeId,
    /// Its roles ([`Roles::LEGACY`] for a certificate that names none).
    pub roles: Roles,
    /// The certificate names no role (issued before roles existed).
    pub legacy: bool,
}

impl PeerCert {
    /// The holder, for messages: `<id> (node+admin)`.
    pub fn describe(&self) -> String {
        if self.legacy {
            format!("{} (no roles: taken as {})", self.id, self.roles)
        } else {
            format!("{} ({})", self.id, self.roles)
        }
    }
}

/// Parses a `<role>.role.larder` name: `None` if it is not a role name, an error if
/// it names an unknown role.
fn parse_role_name(name: &str) -> Option<Result<Role, NetError>> {
    let role = name.strip_suffix(ROLE_NAME_SUFFIX)?;
    Some(role.parse())
}

/// The roles a certificate names. This parses the certificate but does not verify
/// it; the TLS verifiers do that first.
pub fn roles_from_cert(cert: &CertificateDer<'_>) -> Result<(Roles, bool), NetError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| NetError::Certificate(format!("unparsable certificate: {e}")))?;
    let mut roles = Roles::NONE;
    for name in ee.valid_dns_names() {
        if let Some(role) = parse_role_name(name) {
            roles.0 |= role?.bit();
        }
    }
    if roles.is_empty() {
        Ok((Roles::LEGACY, true))
    } else {
        Ok((roles, false))
    }
}

/// The node id and roles of a certificate.
pub fn peer_cert(cert: &CertificateDer<'_>) -> Result<PeerCert, NetError> {
    let id = node_id_from_cert(cert)?;
    let (roles, legacy) = roles_from_cert(cert)?;
    Ok(PeerCert { id, roles, legacy })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(parse_role_name(&r.dns_name()).unwrap().unwrap(), r);
            assert_eq!(r.name().parse::<Role>().unwrap(), r);
        }
        assert!(parse_role_name("root.role.larder").unwrap().is_err());
        assert!(parse_role_name("example.com").is_none());
        let both = Roles::of(&[Role::Admin, Role::Client]);
        assert_eq!(both.to_string(), "admin+client");
        assert!(both.contains(Role::Admin) && !both.contains(Role::Node));
        assert_eq!(Roles::NONE.to_string(), "none");
    }
}
