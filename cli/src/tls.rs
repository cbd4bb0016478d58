//! TLS for `larder-node`'s RESP server: the rustls `ServerConfig` built from the
//! `tls_*` keys ([`RespTls`]), with errors that name the key and the file.
//!
//! This is not the mesh's TLS (QUIC, the cluster CA, node ids in certificates): RESP
//! clients are Redis clients, so the server presents an ordinary certificate (any CA,
//! names checked by the client) and, with `tls_auth_clients`, checks client
//! certificates against `tls_ca_cert_file` as Redis does.

use std::path::Path;
use std::sync::Arc;

use larder::resp::rustls::{self, crypto::ring, server::WebPkiClientVerifier, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{ConfigError, RespTls, TlsAuthClients};

impl RespTls {
    /// Reads the certificate, key and CA files and builds the RESP server's TLS
    /// configuration (TLS 1.2 and 1.3, rustls' safe defaults, ring). `config` is the
    /// configuration file, named in errors with the key and the file at fault: a file
    /// that cannot be read, holds no PEM certificate or key, or a key that is not the
    /// certificate's.
    pub fn server_config(&self, config: &Path) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let err = |field: &str, file: &Path, message: String| ConfigError::Invalid {
            path: config.to_path_buf(),
            line: None,
            field: Some(field.to_string()),
            message: format!("{}: {message}", file.display()),
        };
        let read = |field: &str, file: &Path| {
            std::fs::read(file).map_err(|e| err(field, file, e.to_string()))
        };

        let cert_pem = read("tls_cert_file", &self.cert_file)?;
        let chain =
            certificates(&cert_pem).map_err(|m| err("tls_cert_file", &self.cert_file, m))?;
        let key_pem = read("tls_key_file", &self.key_file)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
            let m = match e {
                rustls_pki_types::pem::Error::NoItemsFound => {
                    "no PEM private key (-----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC \
                     PRIVATE KEY) in the file"
                        .to_string()
                }
                e => format!("private key PEM: {e}"),
            };
            err("tls_key_file", &self.key_file, m)
        })?;

        let provider = Arc::new(ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| err("tls_cert_file", &self.cert_file, e.to_string()))?;
        let builder = match (&self.ca_cert_file, self.auth_clients) {
            (Some(ca), auth) if auth != TlsAuthClients::No => {
                let ca_pem = read("tls_ca_cert_file", ca)?;
                let mut roots = RootCertStore::empty();
                for cert in certificates(&ca_pem).map_err(|m| err("tls_ca_cert_file", ca, m))? {
                    roots.add(cert).map_err(|e| {
                        err(
                            "tls_ca_cert_file",
                            ca,
                            format!("not a usable CA certificate: {e}"),
                        )
                    })?;
                }
                let mut verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
                if auth == TlsAuthClients::Optional {
                    verifier = verifier.allow_unauthenticated();
                }
                let verifier = verifier
                    .build()
                    .map_err(|e| err("tls_ca_cert_file", ca, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let config = builder.with_single_cert(chain, key).map_err(|e| {
            err(
                "tls_key_file",
                &self.key_file,
                format!(
                    "not usable with the certificate of {}: {e}",
                    self.cert_file.display()
                ),
            )
        })?;
        Ok(Arc::new(config))
    }
}

/// Every certificate of a PEM file, in order; at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certificate PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into());
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// A self-signed certificate for localhost, and its key, as PEM.
    fn self_signed() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        (c.cert.pem(), c.key_pair.serialize_pem())
    }

    struct Files {
        dir: tempfile::TempDir,
    }

    impl Files {
        fn new() -> Files {
            let dir = tempfile::tempdir().unwrap();
            let (cert, key) = self_signed();
            let (other_cert, other_key) = self_signed();
            for (name, text) in [
                ("server.crt", cert.as_str()),
                ("server.key", key.as_str()),
                ("other.crt", other_cert.as_str()),
                ("other.key", other_key.as_str()),
                ("junk.pem", "hello\n"),
            ] {
                std::fs::write(dir.path().join(name), text).unwrap();
            }
            Files { dir }
        }

        fn path(&self, name: &str) -> PathBuf {
            self.dir.path().join(name)
        }

        fn tls(&self, cert: &str, key: &str, ca: Option<&str>, auth: TlsAuthClients) -> RespTls {
            RespTls {
                cert_file: self.path(cert),
                key_file: self.path(key),
                ca_cert_file: ca.map(|c| self.path(c)),
                auth_clients: auth,
            }
        }

        /// The error of building `tls`: its field and text.
        fn error(&self, tls: &RespTls) -> (String, String) {
            let e = tls
                .server_config(Path::new("/srv/larder/node.toml"))
                .unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with("/srv/larder/node.toml: "), "{s}");
            (e.field().unwrap().to_string(), s)
        }
    }

    #[test]
    fn certificate_key_and_ca_build_a_server_config() {
        let f = Files::new();
        let config = f.path("node.toml");
        for (ca, auth) in [
            (None, TlsAuthClients::No),
            (Some("other.crt"), TlsAuthClients::Yes),
            (Some("other.crt"), TlsAuthClients::Optional),
            (Some("other.crt"), TlsAuthClients::No),
        ] {
            let tls = f.tls("server.crt", "server.key", ca, auth);
            if let Err(e) = tls.server_config(&config) {
                panic!("{ca:?} {auth:?}: {e}");
            }
        }
    }

    #[test]
    fn errors_name_the_key_and_the_file() {
        let f = Files::new();
        let no = TlsAuthClients::No;
        let cases = [
            (
                f.tls("missing.crt", "server.key", None, no),
                "tls_cert_file",
                "missing.crt",
                "No such file",
            ),
            (
                f.tls("junk.pem", "server.key", None, no),
                "tls_cert_file",
                "junk.pem",
                "no PEM certificate",
            ),
            (
                f.tls("server.crt", "server.crt", None, no),
                "tls_key_file",
                "server.crt",
                "no PEM private key",
            ),
            (
                f.tls("server.crt", "missing.key", None, no),
                "tls_key_file",
                "missing.key",
                "No such file",
            ),
            (
                f.tls("server.crt", "other.key", None, no),
                "tls_key_file",
                "other.key",
                "not usable with the certificate of",
            ),
            (
                f.tls(
                    "server.crt",
                    "server.key",
                    Some("junk.pem"),
                    TlsAuthClients::Yes,
                ),
                "tls_ca_cert_file",
                "junk.pem",
                "no PEM certificate",
            ),
            (
                f.tls(
                    "server.crt",
                    "server.key",
                    Some("nope.crt"),
                    TlsAuthClients::Optional,
                ),
                "tls_ca_cert_file",
                "nope.crt",
                "No such file",
            ),
        ];
        for (tls, field, file, needle) in cases {
            let (got, s) = f.error(&tls);
            assert_eq!(got, field, "{s}");
            assert!(s.contains(&format!("field `{field}`")), "{s}");
            assert!(
                s.contains(file) && s.contains(needle),
                "{s} (wanted {file} and {needle:?})"
            );
        }
    }
}
