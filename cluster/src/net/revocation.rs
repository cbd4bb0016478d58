//! Revocation: a certificate revocation list (CRL, RFC 5280) signed by the cluster CA.
//!
//! `larder-cli certs revoke` adds a certificate's serial number to the CA directory's
//! `revoked.crl` ([`ClusterCa::revocation_list`]); every node names that file in its
//! configuration ([`super::NetConfig::revocation_list`]). A node checks peers against
//! it in both directions of every handshake (rustls' WebPKI verifiers, end-entity
//! certificates only), watches the file and, when it changes, loads it again and
//! closes the connections of certificates it now revokes.
//!
//! The list is signed by the CA, so only the CA's holder can revoke; a node refuses a
//! list that the CA did not sign, or whose issuer is another CA, and keeps the one it
//! had. The list's `nextUpdate` is not enforced: it does not expire.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::SystemTime;

use rcgen::{CertificateRevocationListParams, KeyIdMethod, RevokedCertParams, SerialNumber};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, UnixTime};

use super::certs::{ClusterCa, NodeIdentity};
use super::NetError;

/// A certificate revocation list, parsed.
#[derive(Clone, Debug)]
pub struct RevocationList {
    der: CertificateRevocationListDer<'static>,
    /// Revoked serial numbers, without leading zero bytes.
    serials: HashSet<Vec<u8>>,
}

/// A serial number without its leading zero bytes (DER may add one to keep it
/// positive), so the same number always compares equal.
fn normalize(serial: &[u8]) -> Vec<u8> {
    let start = serial.iter().position(|&b| b != 0).unwrap_or(serial.len());
    serial[start..].to_vec()
}

/// The serial number of a certificate (its DER integer's bytes). Parses, does not
/// verify.
pub fn cert_serial(cert: &CertificateDer<'_>) -> Result<Vec<u8>, NetError> {
    let ee = webpki::EndEntityCert::try_from(cert)
        .map_err(|e| NetError::Certificate(format!("unparsable certificate: {e}")))?;
    Ok(ee.serial().to_vec())
}

impl RevocationList {
    /// A list from its DER or PEM (`-----BEGIN X509 CRL-----`) bytes. Checks it
    /// parses; [`RevocationList::check_signed_by`] checks who signed it.
    pub fn from_bytes(bytes: &[u8]) -> Result<RevocationList, NetError> {
        let der = if bytes.starts_with(b"-----") || bytes.trim_ascii_start().starts_with(b"-----") {
            CertificateRevocationListDer::from_pem_slice(bytes)
                .map_err(|e| NetError::Certificate(format!("revocation list PEM: {e}")))?
        } else {
            CertificateRevocationListDer::from(bytes.to_vec())
        };
        let crl = webpki::BorrowedCertRevocationList::from_der(der.as_ref())
            .map_err(|e| NetError::Certificate(format!("revocation list: {e}")))?;
        let mut serials = HashSet::new();
        for entry in &crl {
            let entry =
                entry.map_err(|e| NetError::Certificate(format!("revocation list entry: {e}")))?;
            serials.insert(normalize(entry.serial_number));
        }
        Ok(RevocationList { der, serials })
    }

    /// The list as DER.
    pub fn der(&self) -> &CertificateRevocationListDer<'static> {
        &self.der
    }

    /// The list as PEM (`X509 CRL`).
    pub fn pem(&self) -> String {
        super::certs::pem_block("X509 CRL", self.der.as_ref())
    }

    /// How many certificates it revokes.
    pub fn len(&self) -> usize {
        self.serials.len()
    }

    /// Whether it revokes nothing.
    pub fn is_empty(&self) -> bool {
        self.serials.is_empty()
    }

    /// Whether it revokes `cert` (by serial number; the certificate is assumed to be
    /// the cluster CA's, which the handshake checked).
    pub fn revokes(&self, cert: &CertificateDer<'_>) -> bool {
        cert_serial(cert).is_ok_and(|s| self.serials.contains(&normalize(&s)))
    }

    /// Checks the list is the cluster CA's (issuer and signature), by verifying
    /// `own` (this node's certificate, issued by `ca`) against `ca` with the list the
    /// way a handshake does. Returns whether `own` itself is revoked: a node whose
    /// own certificate is revoked keeps running but peers refuse it.
    pub fn check_signed_by(
        &self,
        ca: &CertificateDer<'static>,
        own: &NodeIdentity,
    ) -> Result<bool, NetError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(ca.clone())
            .map_err(|e| NetError::Certificate(format!("cluster CA: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .with_crls([self.der.clone()])
        .only_check_end_entity_revocation()
        .build()
        .map_err(|e| NetError::Tls(e.to_string()))?;
        let leaf = own
            .cert_chain()
            .first()
            .ok_or_else(|| NetError::Certificate("empty certificate chain".into()))?;
        match verifier.verify_client_cert(leaf, &own.cert_chain()[1..], UnixTime::now()) {
            Ok(_) => Ok(false),
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)) => Ok(true),
            Err(e) => Err(NetError::Certificate(format!(
                "the revocation list is not the cluster CA's ({e})"
            ))),
        }
    }
}

impl ClusterCa {
    /// Checks `cert` is an end-entity certificate this CA signed. A list revokes by
    /// serial number alone, so revoking a certificate of another CA (the wrong file,
    /// another cluster's) would seem to succeed and revoke nothing that matters, or a
    /// certificate of this CA that happens to share its serial. One that has expired
    /// (or is not valid yet) is taken: the signature is what matters here.
    fn check_issued(&self, cert: &CertificateDer<'_>) -> Result<(), NetError> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(self.cert_der())
            .map_err(|e| NetError::Certificate(format!("cluster CA: {e}")))?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .map_err(|e| NetError::Tls(e.to_string()))?;
        let serial = cert_serial(cert)
            .map(|s| s.iter().map(|b| format!("{b:02x}")).collect::<String>())
            .unwrap_or_else(|_| "?".into());
        match verifier.verify_client_cert(&cert.clone().into_owned(), &[], UnixTime::now()) {
            Ok(_)
            | Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Expired
                | rustls::CertificateError::ExpiredContext { .. }
                | rustls::CertificateError::NotValidYet
                | rustls::CertificateError::NotValidYetContext { .. },
            )) => Ok(()),
            Err(e) => Err(NetError::Certificate(format!(
                "certificate with serial {serial} is not one this CA issued ({e}); not revoked"
            ))),
        }
    }

    /// A revocation list signed by this CA: what `previous` (a list this CA made)
    /// revoked, and `revoke` besides. Certificates already on it are not added twice.
    /// Every certificate in `revoke` must be one this CA issued (expired or not);
    /// another's refuses the whole list.
    pub fn revocation_list(
        &self,
        previous: Option<&RevocationList>,
        revoke: &[CertificateDer<'_>],
    ) -> Result<RevocationList, NetError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let at = |secs: u64| {
            time::OffsetDateTime::from_unix_timestamp(i64::try_from(secs).unwrap_or(0))
                .map_err(|e| NetError::Certificate(format!("revocation time: {e}")))
        };
        let this_update = at(now.as_secs())?;
        let mut seen = HashSet::new();
        let mut revoked = Vec::new();
        if let Some(prev) = previous {
            let crl = webpki::BorrowedCertRevocationList::from_der(prev.der.as_ref())
                .map_err(|e| NetError::Certificate(format!("previous revocation list: {e}")))?;
            for entry in &crl {
                let entry = entry.map_err(|e| {
                    NetError::Certificate(format!("previous revocation list entry: {e}"))
                })?;
                if seen.insert(normalize(entry.serial_number)) {
                    revoked.push(RevokedCertParams {
                        serial_number: SerialNumber::from_slice(&normalize(entry.serial_number)),
                        revocation_time: at(entry.revocation_date.as_secs())?,
                        reason_code: None,
                        invalidity_date: None,
                    });
                }
            }
        }
        for cert in revoke {
            self.check_issued(cert)?;
            let serial = normalize(&cert_serial(cert)?);
            if seen.insert(serial.clone()) {
                revoked.push(RevokedCertParams {
                    serial_number: SerialNumber::from_slice(&serial),
                    revocation_time: this_update,
                    reason_code: None,
                    invalidity_date: None,
                });
            }
        }
        let params = CertificateRevocationListParams {
            this_update,
            // Not enforced by nodes (see the module docs); far ahead for other tools.
            next_update: this_update + time::Duration::days(3650),
            // Increases with every list made (milliseconds since the epoch).
            crl_number: SerialNumber::from_slice(&(now.as_millis() as u64).to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        let crl = params.signed_by(&self.cert, &self.key)?;
        RevocationList::from_bytes(crl.der().as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::roles::Role;
    use crate::proto::NodeId;

    #[test]
    fn lists_accumulate_and_survive_pem() {
        let ca = ClusterCa::generate("revocation test").unwrap();
        let a = ca.issue_as(NodeId([1; 20]), &[Role::Client]).unwrap();
        let b = ca.issue(NodeId([2; 20])).unwrap();
        let c = ca.issue_as(NodeId([3; 20]), &[Role::Admin]).unwrap();
        let leaf = |i: &NodeIdentity| i.cert_chain()[0].clone();

        let empty = ca.revocation_list(None, &[]).unwrap();
        assert!(empty.is_empty());
        let one = ca.revocation_list(Some(&empty), &[leaf(&a)]).unwrap();
        // Revoking again adds nothing; a later list keeps the earlier entries.
        let again = ca.revocation_list(Some(&one), &[leaf(&a)]).unwrap();
        assert_eq!(again.len(), 1);
        let two = ca.revocation_list(Some(&again), &[leaf(&b)]).unwrap();
        assert_eq!(two.len(), 2);
        assert!(two.revokes(&leaf(&a)) && two.revokes(&leaf(&b)) && !two.revokes(&leaf(&c)));

        let reread = RevocationList::from_bytes(two.pem().as_bytes()).unwrap();
        assert_eq!(reread.der(), two.der());
        let from_der = RevocationList::from_bytes(two.der().as_ref()).unwrap();
        assert!(from_der.revokes(&leaf(&b)));

        // Checked against the CA: this CA's passes (and says whether the node's own
        // certificate is on it), another CA's does not.
        assert!(!two.check_signed_by(&ca.cert_der(), &c).unwrap());
        assert!(two.check_signed_by(&ca.cert_der(), &b).unwrap());
        let other = ClusterCa::generate("revocation test").unwrap();
        let foreign = other.revocation_list(None, &[]).unwrap();
        assert!(foreign.check_signed_by(&ca.cert_der(), &c).is_err());

        assert!(RevocationList::from_bytes(b"not a list").is_err());
        assert!(RevocationList::from_bytes(
            b"-----BEGIN X509 CRL-----\n!!\n-----END X509 CRL-----\n"
        )
        .is_err());
    }

    #[test]
    fn only_certificates_of_this_ca_are_revoked() {
        let ca = ClusterCa::generate("cluster").unwrap();
        // Another cluster's CA, even under the same name.
        let other = ClusterCa::generate("cluster").unwrap();
        let ours = ca.issue(NodeId([1; 20])).unwrap();
        let theirs = other.issue(NodeId([1; 20])).unwrap();
        let leaf = |i: &NodeIdentity| i.cert_chain()[0].clone();
        let err = ca
            .revocation_list(None, &[leaf(&ours), leaf(&theirs)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("not one this CA issued"), "{err}");
        // The CA's own certificate is not an end entity to revoke.
        assert!(ca.revocation_list(None, &[ca.cert_der()]).is_err());
        let list = ca.revocation_list(None, &[leaf(&ours)]).unwrap();
        assert!(list.revokes(&leaf(&ours)));
    }

    #[test]
    fn serials_compare_without_leading_zeros() {
        assert_eq!(normalize(&[0, 0, 0x80, 1]), vec![0x80, 1]);
        assert_eq!(normalize(&[0x7f]), vec![0x7f]);
        assert_eq!(normalize(&[0, 0]), Vec::<u8>::new());
    }
}
