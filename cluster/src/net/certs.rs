//! Certificates: a cluster CA and node certificates that name their node id.
//!
//! A node certificate carries its id as a DNS subject alternative name
//! `<40 hex digits>.node.larder` (lowercase, as [`NodeId`]'s `Display` prints it) and as
//! its subject common name. The DNS form is what the handshake checks: rustls' WebPKI
//! verifier matches it like a host name, so a client that dials a known node verifies
//! the id with the standard name check, and the id of any verified peer is read back
//! from the same name. A certificate must carry exactly one such name.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::NetError;
use crate::proto::NodeId;

/// The DNS-name suffix under which node ids are named.
pub const NODE_NAME_SUFFIX: &str = ".node.larder";

/// The DNS name that carries `id` in a node certificate: `<hex id>.node.larder`.
pub fn node_dns_name(id: NodeId) -> String {
    format!("{id}{NODE_NAME_SUFFIX}")
}

/// Parses a [`node_dns_name`] back into an id. Only lowercase hex is accepted, so
/// each id has one name.
pub fn parse_node_dns_name(name: &str) -> Option<NodeId> {
    let hex = name.strip_suffix(NODE_NAME_SUFFIX)?;
    if hex.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    NodeId::from_hex(hex)
}

/// The node id a certificate names: its single `<hex>.node.larder` DNS name. This
/// parses the certificate but does not verify it; the TLS verifiers do that first.
pub fn node_id_from_cert(cert: &CertificateDer<'_>) -> Result<NodeId, NetError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| NetError::Certificate(format!("unparsable certificate: {e}")))?;
    let mut ids = ee.valid_dns_names().filter_map(parse_node_dns_name);
    match (ids.next(), ids.next()) {
        (Some(id), None) => Ok(id),
        (None, _) => Err(NetError::Certificate(
            "certificate names no node id (<hex>.node.larder)".into(),
        )),
        (Some(_), Some(_)) => Err(NetError::Certificate(
            "certificate names more than one node id".into(),
        )),
    }
}

/// A cluster certificate authority: every node certificate is signed by it, and every
/// node trusts only it. Generated in memory (ECDSA P-256); keep the key offline.
pub struct ClusterCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl ClusterCa {
    /// A new self-signed CA named `name` (the subject common name).
    pub fn generate(name: &str) -> Result<Self, NetError> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(ClusterCa { cert, key })
    }

    /// The CA certificate (DER), what nodes trust.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.cert.der().clone()
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        self.cert.pem()
    }

    /// The CA's private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate and key for node `id`, valid as both TLS server and client.
    pub fn issue(&self, id: NodeId) -> Result<NodeIdentity, NetError> {
        let mut params = CertificateParams::new(vec![node_dns_name(id)])?;
        params
            .distinguished_name
            .push(DnType::CommonName, id.to_string());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.cert, &self.key)?;
        Ok(NodeIdentity {
            id,
            cert_chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        })
    }
}

/// A node's TLS identity: its id, its certificate chain (leaf first) and its key.
#[derive(Debug)]
pub struct NodeIdentity {
    id: NodeId,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            id: self.id,
            cert_chain: self.cert_chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl NodeIdentity {
    /// An identity from DER; the id is read from the leaf certificate.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, NetError> {
        let leaf = cert_chain
            .first()
            .ok_or_else(|| NetError::Certificate("empty certificate chain".into()))?;
        let id = node_id_from_cert(leaf)?;
        Ok(NodeIdentity {
            id,
            cert_chain,
            key,
        })
    }

    /// An identity from PEM text: one or more certificates (leaf first) and a key.
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| NetError::Certificate(format!("certificate PEM: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| NetError::Certificate(format!("key PEM: {e}")))?;
        Self::from_der(chain, key)
    }

    /// The node id the certificate names.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The certificate chain, leaf first.
    pub fn cert_chain(&self) -> &[CertificateDer<'static>] {
        &self.cert_chain
    }

    /// The private key.
    pub fn key(&self) -> &PrivateKeyDer<'static> {
        &self.key
    }

    /// The leaf certificate as PEM.
    pub fn cert_pem(&self) -> String {
        // The chain is never empty (checked in `from_der`, one entry from `issue`).
        let leaf = self
            .cert_chain
            .first()
            .map(|c| c.as_ref())
            .unwrap_or_default();
        pem_block("CERTIFICATE", leaf)
    }

    /// The private key as PEM (PKCS#8 for keys made by [`ClusterCa::issue`]).
    pub fn key_pem(&self) -> String {
        let label = match &self.key {
            PrivateKeyDer::Pkcs1(_) => "RSA PRIVATE KEY",
            PrivateKeyDer::Sec1(_) => "EC PRIVATE KEY",
            _ => "PRIVATE KEY",
        };
        pem_block(label, self.key.secret_der())
    }
}

/// Minimal PEM writer (base64, 64 columns), to avoid a dependency for the inverse of
/// what `rustls-pki-types` already parses.
fn pem_block(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = String::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                b64.push(B64[((v >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                b64.push('=');
            }
        }
    }
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_round_trip() {
        let id = NodeId([0xab; 20]);
        let name = node_dns_name(id);
        assert_eq!(name, format!("{}.node.larder", "ab".repeat(20)));
        assert_eq!(parse_node_dns_name(&name), Some(id));
        assert_eq!(parse_node_dns_name(&name.to_uppercase()), None);
        assert_eq!(parse_node_dns_name("ab.node.larder"), None);
        assert_eq!(parse_node_dns_name("example.com"), None);
    }

    #[test]
    fn issued_certificates_name_their_node_and_survive_pem() {
        let ca = ClusterCa::generate("test CA").unwrap();
        let id = NodeId([7; 20]);
        let ident = ca.issue(id).unwrap();
        assert_eq!(ident.id(), id);
        assert_eq!(node_id_from_cert(&ident.cert_chain()[0]).unwrap(), id);
        let again = NodeIdentity::from_pem(&ident.cert_pem(), &ident.key_pem()).unwrap();
        assert_eq!(again.id(), id);
        assert_eq!(again.cert_chain(), ident.cert_chain());
        assert_eq!(again.key().secret_der(), ident.key().secret_der());
        // The CA's own certificate names no node.
        assert!(node_id_from_cert(&ca.cert_der()).is_err());
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    }
}
