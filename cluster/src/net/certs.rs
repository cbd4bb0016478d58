//! Certificates: a cluster CA and node certificates that name their node id.
//!
//! A node certificate carries its id as a DNS subject alternative name
//! `<40 hex digits>.node.larder` (lowercase, as [`NodeId`]'s `Display` prints it) and as
//! its subject common name. The DNS form is what the handshake checks: rustls' WebPKI
//! verifier matches it like a host name, so a client that dials a known node verifies
//! the id with the standard name check, and the id of any verified peer is read back
//! from the same name. A certificate must carry exactly one such name.

use rcgen::{
    BasicConstraints, BmpString, CertificateParams, DistinguishedName, DnType, DnValue,
    ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, UniversalString,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::roles::{roles_from_cert, Role, Roles};
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
/// node trusts only it. Generated in memory (ECDSA P-256) or loaded from PEM; keep the
/// key offline.
pub struct ClusterCa {
    /// What rcgen signs with: the CA's subject, key identifier and key usages.
    pub(super) cert: rcgen::Certificate,
    pub(super) key: KeyPair,
    /// The CA certificate nodes trust: `cert`'s own, or the loaded one.
    der: CertificateDer<'static>,
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
        let der = cert.der().clone();
        Ok(ClusterCa { cert, key, der })
    }

    /// A CA loaded from its certificate and private key (PEM, the key as PKCS#8, as
    /// [`ClusterCa::cert_pem`] and [`ClusterCa::key_pem`] write them), to issue more
    /// node certificates.
    ///
    /// The certificates it issues name the loaded certificate's subject as their
    /// issuer, byte for byte, carry its subject key identifier as their authority key
    /// identifier, and are signed with its key, so they chain to the original
    /// certificate, which [`ClusterCa::cert_der`] keeps returning unchanged. Refused
    /// if the key is not the certificate's, or if the subject uses a form rcgen cannot
    /// write again (a multi-valued RDN, an unusual string type).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, NetError> {
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| NetError::Certificate(format!("CA certificate PEM: {e}")))?;
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| NetError::Certificate(format!("CA key PEM: {e}")))?;
        let original = ca_der::parse_cert(&der)?;
        if key.public_key_der() != original.spki {
            return Err(NetError::Certificate(
                "the CA key does not belong to the CA certificate".into(),
            ));
        }
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = ca_der::distinguished_name(original.subject_contents)?;
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        if let Some(ski) = original.subject_key_id {
            params.key_identifier_method = KeyIdMethod::PreSpecified(ski.to_vec());
        }
        // Only the parts of this certificate that go into issued ones matter (its
        // subject as their issuer, its key identifier): check the subject came out
        // byte for byte, or issued certificates would not chain to the original.
        let cert = params.self_signed(&key)?;
        let rebuilt = ca_der::parse_cert(cert.der())?;
        if rebuilt.subject != original.subject {
            return Err(NetError::Certificate(
                "the CA certificate's subject cannot be reproduced exactly (multi-valued \
                 or repeated attributes?)"
                    .into(),
            ));
        }
        Ok(ClusterCa {
            cert,
            key,
            der: der.into_owned(),
        })
    }

    /// The CA certificate (DER), what nodes trust.
    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.der.clone()
    }

    /// The CA certificate as PEM.
    pub fn cert_pem(&self) -> String {
        pem_block("CERTIFICATE", &self.der)
    }

    /// The CA's private key as PKCS#8 PEM.
    pub fn key_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// A certificate and key for node `id` with the `node` role, valid as both TLS
    /// server and client.
    pub fn issue(&self, id: NodeId) -> Result<NodeIdentity, NetError> {
        self.issue_as(id, &[Role::Node])
    }

    /// A certificate and key naming `id` and no role, in the form certificates had
    /// before roles existed. Receivers take it as `node` and `admin` and log a
    /// warning, or refuse it (see [`super::roles`]); it is here to test that.
    pub fn issue_without_roles(&self, id: NodeId) -> Result<NodeIdentity, NetError> {
        self.issue_names(id, Roles::NONE)
    }

    /// A certificate and key naming `id` and `roles` (see [`super::roles`]), valid as
    /// both TLS server and client. At least one role is required.
    pub fn issue_as(&self, id: NodeId, roles: &[Role]) -> Result<NodeIdentity, NetError> {
        if roles.is_empty() {
            return Err(NetError::Certificate(
                "a certificate needs at least one role".into(),
            ));
        }
        self.issue_names(id, Roles::of(roles))
    }

    fn issue_names(&self, id: NodeId, roles: Roles) -> Result<NodeIdentity, NetError> {
        let mut names = vec![node_dns_name(id)];
        names.extend(roles.iter().map(Role::dns_name));
        let mut params = CertificateParams::new(names)?;
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
            roles: if roles.is_empty() {
                Roles::LEGACY
            } else {
                roles
            },
            cert_chain: vec![cert.der().clone()],
            key: PrivatePkcs8KeyDer::from(key.serialize_der()).into(),
        })
    }
}

/// A node's TLS identity: its id, its certificate chain (leaf first) and its key.
#[derive(Debug)]
pub struct NodeIdentity {
    id: NodeId,
    roles: Roles,
    cert_chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for NodeIdentity {
    fn clone(&self) -> Self {
        NodeIdentity {
            id: self.id,
            roles: self.roles,
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
        let (roles, _) = roles_from_cert(leaf)?;
        Ok(NodeIdentity {
            id,
            roles,
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

    /// The roles the certificate names ([`Roles::LEGACY`] if it names none).
    pub fn roles(&self) -> Roles {
        self.roles
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
pub(super) fn pem_block(label: &str, der: &[u8]) -> String {
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

/// Checks that `cert` can be a cluster CA: it must be a CA certificate (its basic
/// constraints say `cA`). A node or tool certificate given as the CA would be
/// accepted by rustls as a trust anchor, and the node could then verify no peer.
pub fn check_ca_cert(cert: &CertificateDer<'_>) -> Result<(), NetError> {
    if ca_der::is_ca(cert)? {
        return Ok(());
    }
    let named = node_id_from_cert(cert)
        .map(|id| format!(" (it is the certificate of node {id})"))
        .unwrap_or_default();
    Err(NetError::Certificate(format!(
        "the cluster CA certificate is not a CA certificate{named}: its basic \
         constraints do not say cA (give the CA's ca.pem, not a node's certificate)"
    )))
}

/// Just enough DER reading to reload a CA: the subject, public key and subject key
/// identifier of a certificate, and a subject as rcgen's `DistinguishedName`.
mod ca_der {
    use super::*;

    /// The parts of a certificate a reloaded CA needs.
    pub(super) struct CertParts<'a> {
        /// The subject `Name`, tag and length included.
        pub subject: &'a [u8],
        /// The subject `Name`'s contents (its RDN sets).
        pub subject_contents: &'a [u8],
        /// The `SubjectPublicKeyInfo`, tag and length included.
        pub spki: &'a [u8],
        /// The subject key identifier extension's key id, if present.
        pub subject_key_id: Option<&'a [u8]>,
    }

    fn bad(what: &str) -> NetError {
        NetError::Certificate(format!("CA certificate: malformed DER ({what})"))
    }

    /// One DER element and what follows it.
    struct Element<'a> {
        tag: u8,
        /// The contents.
        contents: &'a [u8],
        /// Tag, length and contents.
        whole: &'a [u8],
        /// The input after the element.
        rest: &'a [u8],
    }

    /// The first element of `input`. Low tag numbers and definite lengths only, as
    /// DER certificates use.
    fn next(input: &[u8]) -> Option<Element<'_>> {
        let (&tag, rest) = input.split_first()?;
        if tag & 0x1f == 0x1f {
            return None;
        }
        let (&first, rest) = rest.split_first()?;
        let (len, rest) = if first < 0x80 {
            (usize::from(first), rest)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || rest.len() < n {
                return None;
            }
            let len = rest[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &rest[n..])
        };
        if rest.len() < len {
            return None;
        }
        let header = input.len() - rest.len();
        Some(Element {
            tag,
            contents: &rest[..len],
            whole: &input[..header + len],
            rest: &rest[len..],
        })
    }

    /// The first element of `input`, which must have `tag`.
    fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<Element<'a>, NetError> {
        match next(input) {
            Some(e) if e.tag == tag => Ok(e),
            _ => Err(bad(what)),
        }
    }

    const SEQUENCE: u8 = 0x30;
    const SET: u8 = 0x31;
    const OID: u8 = 0x06;
    const OCTET_STRING: u8 = 0x04;
    const BOOLEAN: u8 = 0x01;
    /// 2.5.29.14, subjectKeyIdentifier.
    const SKI_OID: &[u8] = &[0x55, 0x1d, 0x0e];

    pub(super) fn parse_cert(der: &[u8]) -> Result<CertParts<'_>, NetError> {
        let cert = expect(der, SEQUENCE, "certificate")?.contents;
        let tbs = expect(cert, SEQUENCE, "tbsCertificate")?.contents;
        let mut rest = tbs;
        if rest.first() == Some(&0xa0) {
            rest = expect(rest, 0xa0, "version")?.rest;
        }
        for (tag, what) in [
            (0x02, "serial number"),
            (SEQUENCE, "signature algorithm"),
            (SEQUENCE, "issuer"),
            (SEQUENCE, "validity"),
        ] {
            rest = expect(rest, tag, what)?.rest;
        }
        let subject = expect(rest, SEQUENCE, "subject")?;
        let spki = expect(subject.rest, SEQUENCE, "subject public key info")?;
        let mut rest = spki.rest;
        let mut subject_key_id = None;
        while let Some(e) = next(rest) {
            rest = e.rest;
            if e.tag != 0xa3 {
                continue; // issuer/subject unique ids
            }
            let mut exts = expect(e.contents, SEQUENCE, "extensions")?.contents;
            while !exts.is_empty() {
                let ext = expect(exts, SEQUENCE, "extension")?;
                exts = ext.rest;
                let oid = expect(ext.contents, OID, "extension id")?;
                let mut after = oid.rest;
                if after.first() == Some(&BOOLEAN) {
                    after = expect(after, BOOLEAN, "extension criticality")?.rest;
                }
                let value = expect(after, OCTET_STRING, "extension value")?.contents;
                if oid.contents == SKI_OID {
                    let id = expect(value, OCTET_STRING, "subject key identifier")?;
                    subject_key_id = Some(id.contents);
                }
            }
        }
        if !rest.is_empty() {
            return Err(bad("tbsCertificate"));
        }
        Ok(CertParts {
            subject: subject.whole,
            subject_contents: subject.contents,
            spki: spki.whole,
            subject_key_id,
        })
    }

    fn oid_arcs(oid: &[u8]) -> Result<Vec<u64>, NetError> {
        let mut arcs = Vec::new();
        let mut v: u64 = 0;
        for (i, &b) in oid.iter().enumerate() {
            if v > u64::MAX >> 7 {
                return Err(bad("attribute type"));
            }
            v = (v << 7) | u64::from(b & 0x7f);
            if b & 0x80 != 0 {
                if i + 1 == oid.len() {
                    return Err(bad("attribute type"));
                }
                continue;
            }
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - 40 * first);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
        if arcs.is_empty() {
            return Err(bad("attribute type"));
        }
        Ok(arcs)
    }

    /// A subject `Name`'s contents as rcgen's `DistinguishedName` (one attribute per
    /// RDN, the string types rcgen writes).
    pub(super) fn distinguished_name(mut rdns: &[u8]) -> Result<DistinguishedName, NetError> {
        let unsupported =
            |what: &str| NetError::Certificate(format!("CA certificate subject: {what}"));
        let mut dn = DistinguishedName::new();
        while !rdns.is_empty() {
            let set = expect(rdns, SET, "relative distinguished name")?;
            rdns = set.rest;
            let attr = expect(set.contents, SEQUENCE, "attribute")?;
            if !attr.rest.is_empty() {
                return Err(unsupported("multi-valued RDNs are not supported"));
            }
            let oid = expect(attr.contents, OID, "attribute type")?;
            let value = next(oid.rest).ok_or_else(|| bad("attribute value"))?;
            if !value.rest.is_empty() {
                return Err(bad("attribute"));
            }
            let (tag, data) = (value.tag, value.contents);
            let text =
                || std::str::from_utf8(data).map_err(|_| unsupported("a string is not UTF-8"));
            let invalid = |e: rcgen::Error| unsupported(&e.to_string());
            let value = match tag {
                0x0c => DnValue::Utf8String(text()?.to_owned()),
                0x13 => DnValue::PrintableString(text()?.try_into().map_err(invalid)?),
                0x16 => DnValue::Ia5String(text()?.try_into().map_err(invalid)?),
                0x14 => DnValue::TeletexString(text()?.try_into().map_err(invalid)?),
                0x1e => {
                    DnValue::BmpString(BmpString::from_utf16be(data.to_vec()).map_err(invalid)?)
                }
                0x1c => DnValue::UniversalString(
                    UniversalString::from_utf32be(data.to_vec()).map_err(invalid)?,
                ),
                other => {
                    return Err(unsupported(&format!(
                        "attribute value type 0x{other:02x} is not supported"
                    )))
                }
            };
            dn.push(DnType::from_oid(&oid_arcs(oid.contents)?), value);
        }
        Ok(dn)
    }

    /// 2.5.29.19, basicConstraints.
    const BASIC_CONSTRAINTS_OID: &[u8] = &[0x55, 0x1d, 0x13];

    /// Whether the certificate's basicConstraints extension says `cA` (absent: no).
    pub(super) fn is_ca(der: &[u8]) -> Result<bool, NetError> {
        let cert = expect(der, SEQUENCE, "certificate")?.contents;
        let mut rest = expect(cert, SEQUENCE, "tbsCertificate")?.contents;
        // version, serial, signature algorithm, issuer, validity, subject, key; then
        // the optional unique ids and extensions.
        while let Some(e) = next(rest) {
            rest = e.rest;
            if e.tag != 0xa3 {
                continue;
            }
            let mut exts = expect(e.contents, SEQUENCE, "extensions")?.contents;
            while !exts.is_empty() {
                let ext = expect(exts, SEQUENCE, "extension")?;
                exts = ext.rest;
                let oid = expect(ext.contents, OID, "extension id")?;
                if oid.contents != BASIC_CONSTRAINTS_OID {
                    continue;
                }
                let mut after = oid.rest;
                if after.first() == Some(&BOOLEAN) {
                    after = expect(after, BOOLEAN, "extension criticality")?.rest;
                }
                let value = expect(after, OCTET_STRING, "extension value")?.contents;
                let constraints = expect(value, SEQUENCE, "basic constraints")?.contents;
                // cA BOOLEAN DEFAULT FALSE, then pathLenConstraint.
                return Ok(match next(constraints) {
                    Some(b) if b.tag == BOOLEAN => b.contents.first().is_some_and(|&v| v != 0),
                    _ => false,
                });
            }
        }
        if !rest.is_empty() {
            return Err(bad("tbsCertificate"));
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_ca_certificate_passes_the_ca_check() {
        let ca = ClusterCa::generate("check").unwrap();
        check_ca_cert(&ca.cert_der()).unwrap();
        // A node certificate (no basic constraints) names its node in the refusal.
        let id = NodeId([7; 20]);
        let node = ca.issue(id).unwrap();
        let err = check_ca_cert(&node.cert_chain()[0])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a CA certificate"), "{err}");
        assert!(err.contains(&id.to_string()), "{err}");
        // Basic constraints present and saying cA = FALSE.
        let mut params = CertificateParams::new(vec!["x.example".into()]).unwrap();
        params.is_ca = IsCa::ExplicitNoCa;
        let key = KeyPair::generate().unwrap();
        let explicit = params.self_signed(&key).unwrap();
        assert!(check_ca_cert(explicit.der()).is_err());
        // A CA reloaded from PEM is still one.
        let reloaded = ClusterCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        check_ca_cert(&reloaded.cert_der()).unwrap();
        // Garbage is an error, not a panic.
        for bad in [&[][..], &[0x30][..], &[0x30, 0x03, 0x30, 0x01, 0xff][..]] {
            assert!(check_ca_cert(&CertificateDer::from(bad.to_vec())).is_err());
        }
    }

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

    /// A CA reloaded from its PEM files issues certificates that pass the real
    /// handshake checks (both directions, with the node-name check) against the
    /// ORIGINAL CA certificate, and against nothing else.
    #[tokio::test]
    async fn reloaded_ca_issues_certificates_that_verify_against_the_original() {
        use super::super::tls::{client_config, peer_node_id, server_config};
        use std::time::Duration;

        let ca = ClusterCa::generate("reload test CA").unwrap();
        let reloaded = ClusterCa::from_pem(&ca.cert_pem(), &ca.key_pem()).unwrap();
        // Nodes keep trusting the very same certificate.
        assert_eq!(reloaded.cert_der(), ca.cert_der());
        assert_eq!(reloaded.cert_pem(), ca.cert_pem());
        // And reloading the reloaded CA changes nothing.
        let twice = ClusterCa::from_pem(&reloaded.cert_pem(), &reloaded.key_pem()).unwrap();
        assert_eq!(twice.cert_der(), ca.cert_der());

        let server_id = NodeId([1; 20]);
        let client_id = NodeId([2; 20]);
        let server_ident = reloaded.issue(server_id).unwrap();
        let client_ident = twice.issue(client_id).unwrap();
        let trust = ca.cert_der(); // the original only
        let idle = Duration::from_secs(2);

        let server = quinn::Endpoint::server(
            server_config(&server_ident, &trust, idle).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let addr = server.local_addr().unwrap();
        let accept = tokio::spawn(async move {
            let conn = server.accept().await.unwrap().await.unwrap();
            let peer = peer_node_id(&conn).unwrap();
            conn.close(0u32.into(), b"done");
            peer
        });
        let mut client = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client.set_default_client_config(client_config(&client_ident, &trust, idle).unwrap());
        // Dialled by the server's id: the name check passes for the reloaded CA's cert.
        let conn = tokio::time::timeout(
            Duration::from_secs(10),
            client.connect(addr, &node_dns_name(server_id)).unwrap(),
        )
        .await
        .expect("handshake timed out")
        .expect("handshake with certificates from the reloaded CA");
        assert_eq!(peer_node_id(&conn).unwrap(), server_id);
        let seen = tokio::time::timeout(Duration::from_secs(10), accept)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(seen, client_id);
        client.close(0u32.into(), b"done");

        // A node trusting another CA with the same name refuses them.
        let other = ClusterCa::generate("reload test CA").unwrap();
        let foreign = quinn::Endpoint::server(
            server_config(&server_ident, &other.cert_der(), idle).unwrap(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .unwrap();
        let faddr = foreign.local_addr().unwrap();
        let mut client2 = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
        client2.set_default_client_config(
            client_config(&client_ident, &other.cert_der(), idle).unwrap(),
        );
        tokio::spawn(async move {
            if let Some(incoming) = foreign.accept().await {
                let _ = incoming.await;
            }
        });
        let refused = tokio::time::timeout(
            Duration::from_secs(10),
            client2.connect(faddr, &node_dns_name(server_id)).unwrap(),
        )
        .await
        .expect("handshake timed out");
        assert!(refused.is_err(), "a foreign CA accepted the certificate");
    }

    #[test]
    fn reloading_a_ca_checks_its_inputs() {
        let ca = ClusterCa::generate("checks").unwrap();
        let other = ClusterCa::generate("checks").unwrap();
        let err = ClusterCa::from_pem(&ca.cert_pem(), &other.key_pem())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("does not belong"), "{err}");
        assert!(ClusterCa::from_pem("not pem", &ca.key_pem()).is_err());
        assert!(ClusterCa::from_pem(&ca.cert_pem(), "not pem").is_err());
        // A node certificate is not mistaken for a CA whose key is the CA's.
        let node = ca.issue(NodeId([3; 20])).unwrap();
        assert!(ClusterCa::from_pem(&node.cert_pem(), &ca.key_pem()).is_err());
    }

    #[test]
    fn reloaded_ca_keeps_a_richer_subject() {
        // A CA made elsewhere: several attributes, string types rcgen does not pick
        // by default, no subject key identifier left to chance.
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(
            DnType::CountryName,
            DnValue::PrintableString("DE".try_into().unwrap()),
        );
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Läden GmbH");
        params.distinguished_name.push(
            DnType::CustomDnType(vec![0, 9, 2342, 19200300, 100, 1, 25]),
            DnValue::Ia5String("larder".try_into().unwrap()),
        );
        params.distinguished_name.push(DnType::CommonName, "ops CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let reloaded = ClusterCa::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
        let issued = reloaded.issue(NodeId([4; 20])).unwrap();
        let original = ca_der::parse_cert(cert.der()).unwrap();
        let leaf = &issued.cert_chain()[0];
        // The leaf's issuer is the original subject, byte for byte.
        let leaf_issuer = {
            let tbs = &leaf[..];
            let pos = tbs
                .windows(original.subject.len())
                .position(|w| w == original.subject);
            pos.is_some()
        };
        assert!(
            leaf_issuer,
            "the issued certificate does not name the CA's subject"
        );
        // And rustls' verifier chains it to the original certificate.
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            std::sync::Arc::new(roots),
            std::sync::Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        verifier
            .verify_client_cert(leaf, &[], rustls::pki_types::UnixTime::now())
            .expect("the issued certificate chains to the original CA");
    }
}
