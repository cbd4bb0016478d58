//! rustls and quinn configuration: mutual TLS 1.3 under the cluster CA, with the
//! `ring` provider named explicitly (no aws-lc, so no cmake or C toolchain for it).
//!
//! - The **server** side requires a client certificate that chains to the cluster CA
//!   (`WebPkiClientVerifier`). The client's node id is read from that certificate after
//!   the handshake ([`peer_node_id`]).
//! - The **client** side verifies the server's chain against the cluster CA and its
//!   name: dialing a known node uses that node's [`node_dns_name`] as the server name,
//!   so a certificate for another id fails the ordinary name check. A MEET to a bare
//!   address uses [`MEET_SERVER_NAME`], which accepts any node certificate from the CA;
//!   the id it names becomes the peer's id. Either way the server's certificate must
//!   carry the `node` role ([`super::roles`]): a tool's certificate cannot pose as a
//!   node.
//! - Both sides check the peer's certificate against the cluster CA's revocation list,
//!   if the node has one ([`super::revocation`]).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::certs::{node_dns_name, node_id_from_cert, parse_node_dns_name, NodeIdentity};
use super::limits::Limits;
use super::revocation::RevocationList;
use super::roles::{peer_cert as cert_peer, roles_from_cert, PeerCert, Role};
use super::NetError;
use crate::proto::NodeId;

/// The ALPN protocol of the cluster bus.
pub const ALPN: &[u8] = b"larder-cluster/1";

/// The server name used to dial a bare address (MEET): any node certificate signed by
/// the cluster CA is accepted, and its id is learnt from it.
pub const MEET_SERVER_NAME: &str = "meet.node.larder";

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca: &CertificateDer<'static>) -> Result<Arc<RootCertStore>, NetError> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| NetError::Certificate(format!("cluster CA: {e}")))?;
    Ok(Arc::new(roots))
}

/// Verifies a server certificate against the cluster CA and the node id the client
/// expects (the id is the server name; see the module docs).
#[derive(Debug)]
struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let expected = match server_name {
            ServerName::DnsName(name) if name.as_ref() == MEET_SERVER_NAME => None,
            ServerName::DnsName(name) => match parse_node_dns_name(name.as_ref()) {
                Some(id) => Some(id),
                None => return Err(CertificateError::NotValidForName.into()),
            },
            _ => return Err(CertificateError::NotValidForName.into()),
        };
        let presented = node_id_from_cert(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        if expected.is_some_and(|id| id != presented) {
            return Err(CertificateError::NotValidForName.into());
        }
        let name = ServerName::try_from(node_dns_name(presented))
            .map_err(|_| rustls::Error::from(CertificateError::NotValidForName))?;
        // Chain to the cluster CA, validity dates, key usage, revocation, and the
        // name check.
        let verified =
            self.inner
                .verify_server_cert(end_entity, intermediates, &name, ocsp_response, now)?;
        // Only a node serves: a certificate without the node role is not one.
        let (roles, _) = roles_from_cert(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(
                Arc::new(e),
            )))
        })?;
        if !roles.contains(Role::Node) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                rustls::OtherError(Arc::new(NetError::Certificate(format!(
                    "the server's certificate has roles {roles}, not node"
                )))),
            )));
        }
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Transport settings shared by both sides: the stream and receive-window limits of
/// [`Limits`] (a few unidirectional streams at a time for the bus and replication
/// links and MEETs, a bounded number of bidirectional streams, one per forwarded
/// request in flight), keep-alives so an idle link is not closed, and an idle timeout
/// after which a dead peer's link is dropped and redialled.
fn transport(idle_timeout: Duration, limits: &Limits) -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.bidi_streams.into());
    t.max_concurrent_uni_streams(limits.uni_streams.into());
    t.receive_window(limits.receive_window.into());
    // One stream may use the whole connection window, no more.
    t.stream_receive_window(limits.receive_window.into());
    t.keep_alive_interval(Some((idle_timeout / 3).max(Duration::from_millis(100))));
    // Out of range only for absurd values (> 2^62 µs); fall back to quinn's default.
    if let Ok(idle) = quinn::IdleTimeout::try_from(idle_timeout) {
        t.max_idle_timeout(Some(idle));
    }
    Arc::new(t)
}

/// The quinn server configuration of a node: its certificate, client certificates
/// required and verified against `ca`; default [`Limits`], no revocation list.
pub fn server_config(
    identity: &NodeIdentity,
    ca: &CertificateDer<'static>,
    idle_timeout: Duration,
) -> Result<quinn::ServerConfig, NetError> {
    server_config_with(identity, ca, None, idle_timeout, &Limits::default())
}

/// [`server_config`] with a revocation list and limits.
pub fn server_config_with(
    identity: &NodeIdentity,
    ca: &CertificateDer<'static>,
    revoked: Option<&RevocationList>,
    idle_timeout: Duration,
    limits: &Limits,
) -> Result<quinn::ServerConfig, NetError> {
    let provider = provider();
    let mut builder = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone());
    if let Some(list) = revoked {
        builder = builder
            .with_crls([list.der().clone()])
            .only_check_end_entity_revocation();
    }
    let client_verifier = builder.build().map_err(|e| NetError::Tls(e.to_string()))?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_single_cert(identity.cert_chain().to_vec(), identity.key().clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport(idle_timeout, limits));
    Ok(config)
}

/// The quinn client configuration of a node: it presents its certificate and verifies
/// servers against `ca` and the expected node id (see the module docs); default
/// [`Limits`], no revocation list.
pub fn client_config(
    identity: &NodeIdentity,
    ca: &CertificateDer<'static>,
    idle_timeout: Duration,
) -> Result<quinn::ClientConfig, NetError> {
    client_config_with(identity, ca, None, idle_timeout, &Limits::default())
}

/// [`client_config`] with a revocation list and limits.
pub fn client_config_with(
    identity: &NodeIdentity,
    ca: &CertificateDer<'static>,
    revoked: Option<&RevocationList>,
    idle_timeout: Duration,
    limits: &Limits,
) -> Result<quinn::ClientConfig, NetError> {
    let provider = provider();
    let mut builder = WebPkiServerVerifier::builder_with_provider(roots(ca)?, provider.clone());
    if let Some(list) = revoked {
        builder = builder
            .with_crls([list.der().clone()])
            .only_check_end_entity_revocation();
    }
    let inner = builder.build().map_err(|e| NetError::Tls(e.to_string()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NodeServerVerifier { inner }))
        .with_client_auth_cert(identity.cert_chain().to_vec(), identity.key().clone_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| NetError::Tls(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport(idle_timeout, limits));
    Ok(config)
}

/// The server name to dial: the node's DNS name if its id is known, else
/// [`MEET_SERVER_NAME`].
pub fn server_name_for(id: Option<NodeId>) -> String {
    match id {
        Some(id) => node_dns_name(id),
        None => MEET_SERVER_NAME.to_string(),
    }
}

/// The node id in the certificate the peer presented during the handshake. Both sides
/// verified that certificate against the cluster CA, so the id is authenticated.
pub fn peer_node_id(conn: &quinn::Connection) -> Result<NodeId, NetError> {
    node_id_from_cert(&peer_leaf(conn)?)
}

/// The node id and roles in the certificate the peer presented (verified by the
/// handshake, like [`peer_node_id`]).
pub fn peer_cert(conn: &quinn::Connection) -> Result<PeerCert, NetError> {
    cert_peer(&peer_leaf(conn)?)
}

/// The leaf of the certificate chain the peer presented.
pub fn peer_leaf(conn: &quinn::Connection) -> Result<CertificateDer<'static>, NetError> {
    let identity = conn
        .peer_identity()
        .ok_or_else(|| NetError::Certificate("peer presented no certificate".into()))?;
    let chain = identity
        .downcast::<Vec<CertificateDer<'static>>>()
        .map_err(|_| NetError::Certificate("unexpected peer identity type".into()))?;
    chain
        .first()
        .cloned()
        .ok_or_else(|| NetError::Certificate("empty peer certificate chain".into()))
}
