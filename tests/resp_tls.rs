//! The RESP server over TLS (`RespServer::serve_tls`, feature `resp-tls`) with a
//! rustls client trusting a CA made here by rcgen: commands and a reply larger than
//! the socket's buffers, `QUIT` ending with `close_notify`, client certificates when
//! the `ServerConfig` requires them, and plain-text clients closed without harm.

#![cfg(feature = "resp-tls")]

mod resp_support;

use larder::resp::codec::decode;
use larder::resp::rustls::{self, pki_types, RootCertStore};
use larder::resp::{RespConfig, RespServer, Value};
use larder::Cache;
use resp_support::encode;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A CA, a server certificate for localhost signed by it, and a client certificate
/// (signed by it when `trusted`, else by a CA of its own).
struct Pki {
    ca: pki_types::CertificateDer<'static>,
    server: (
        pki_types::CertificateDer<'static>,
        pki_types::PrivateKeyDer<'static>,
    ),
    client: (
        pki_types::CertificateDer<'static>,
        pki_types::PrivateKeyDer<'static>,
    ),
}

fn authority(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    (params.self_signed(&key).unwrap(), key)
}

fn leaf(
    names: &[&str],
    by: &(rcgen::Certificate, rcgen::KeyPair),
) -> (
    pki_types::CertificateDer<'static>,
    pki_types::PrivateKeyDer<'static>,
) {
    let key = rcgen::KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let cert = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&key, &by.0, &by.1)
        .unwrap();
    (
        cert.der().clone(),
        pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )
}

impl Pki {
    fn new(trusted_client: bool) -> Pki {
        let ca = authority("larder test CA");
        let stranger = authority("another CA");
        Pki {
            ca: ca.0.der().clone(),
            server: leaf(&["localhost"], &ca),
            client: leaf(&[], if trusted_client { &ca } else { &stranger }),
        }
    }

    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn roots(&self) -> Arc<RootCertStore> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.clone()).unwrap();
        Arc::new(roots)
    }

    /// The server's configuration; with `client_auth`, client certificates of the CA
    /// are required.
    fn server(&self, client_auth: bool) -> Arc<rustls::ServerConfig> {
        let builder = rustls::ServerConfig::builder_with_provider(Pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if client_auth {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                self.roots(),
                Pki::provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let (cert, key) = (self.server.0.clone(), self.server.1.clone_key());
        Arc::new(builder.with_single_cert(vec![cert], key).unwrap())
    }

    /// A client trusting the CA, presenting its certificate if `present`.
    fn connector(&self, present: bool) -> TlsConnector {
        let builder = rustls::ClientConfig::builder_with_provider(Pki::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(self.roots());
        let config = if present {
            let (cert, key) = (self.client.0.clone(), self.client.1.clone_key());
            builder.with_client_auth_cert(vec![cert], key).unwrap()
        } else {
            builder.with_no_client_auth()
        };
        TlsConnector::from(Arc::new(config))
    }
}

/// Reads one reply from `stream` into `buf` (keeping what follows it).
async fn reply<S: AsyncRead + Unpin>(stream: &mut S, buf: &mut Vec<u8>) -> Value {
    loop {
        if let Some((v, n)) = decode(buf).expect("a valid reply") {
            buf.drain(..n);
            return v;
        }
        let n = stream.read_buf(buf).await.expect("read a reply");
        assert!(n > 0, "the connection closed before a reply");
    }
}

async fn call<S: AsyncRead + AsyncWrite + Unpin, A: AsRef<[u8]>>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    args: &[A],
) -> Value {
    stream.write_all(&encode(args)).await.unwrap();
    stream.flush().await.unwrap();
    reply(stream, buf).await
}

/// A server over `tls` on a free port, with its cache.
async fn serve(
    tls: Arc<rustls::ServerConfig>,
) -> (
    std::net::SocketAddr,
    Cache<String, Vec<u8>>,
    RespServer<Cache<String, Vec<u8>>>,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cache: Cache<String, Vec<u8>> = Cache::builder().build();
    let server = RespServer::new(cache.clone(), RespConfig::default());
    tokio::spawn(server.clone().serve_tls(listener, tls));
    (addr, cache, server)
}

fn localhost() -> pki_types::ServerName<'static> {
    pki_types::ServerName::try_from("localhost").unwrap()
}

/// Runs `f` on a runtime of its own, failing if it takes more than a minute (a reply
/// left unsent would otherwise hang the test).
fn run<F: std::future::Future<Output = ()>>(f: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            tokio::time::timeout(Duration::from_secs(60), f)
                .await
                .expect("the test finishes within a minute")
        });
}

#[test]
fn tls_clients_are_served_and_plain_clients_closed() {
    run(async {
        let pki = Pki::new(true);
        let (addr, cache, server) = serve(pki.server(false)).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = pki
            .connector(false)
            .connect(localhost(), tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            call(&mut tls, &mut buf, &["PING"]).await,
            Value::Simple("PONG".into())
        );
        assert_eq!(
            call(&mut tls, &mut buf, &["SET", "k", "v"]).await,
            Value::ok()
        );
        assert_eq!(cache.get("k"), Some(b"v".to_vec()));

        // A reply of 8 MiB, more than the socket takes at once, and pipelined requests
        // answered in order after it.
        let big = vec![b'x'; 8 << 20];
        assert_eq!(
            call(&mut tls, &mut buf, &[&b"SET"[..], b"big", &big[..]]).await,
            Value::ok()
        );
        let mut batch = encode(&["GET", "big"]);
        for _ in 0..100 {
            batch.extend_from_slice(&encode(&["INCR", "n"]));
        }
        tls.write_all(&batch).await.unwrap();
        tls.flush().await.unwrap();
        assert_eq!(reply(&mut tls, &mut buf).await, Value::bulk(big));
        for i in 1..=100 {
            assert_eq!(reply(&mut tls, &mut buf).await, Value::Integer(i));
        }

        // Plain-text clients are closed by the failed handshake; none is counted as a
        // client, and the TLS client goes on.
        for request in [&b"PING\r\n"[..], b"*1\r\n$4\r\nPING\r\n"] {
            let mut plain = TcpStream::connect(addr).await.unwrap();
            plain.write_all(request).await.unwrap();
            let mut got = Vec::new();
            if let Err(e) = plain.read_to_end(&mut got).await {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
            }
            assert!(!String::from_utf8_lossy(&got).contains("PONG"), "{got:?}");
        }
        assert_eq!(server.connected_clients(), 1);
        assert_eq!(
            call(&mut tls, &mut buf, &["GET", "k"]).await,
            Value::bulk("v")
        );

        // QUIT: +OK, then close_notify (rustls reports a close without it as an
        // unexpected end of file).
        assert_eq!(call(&mut tls, &mut buf, &["QUIT"]).await, Value::ok());
        let mut rest = Vec::new();
        tls.read_to_end(&mut rest).await.expect("a clean TLS close");
        assert!(rest.is_empty(), "{rest:?}");
    });
}

#[test]
fn client_certificates_when_the_server_config_requires_them() {
    run(async {
        let trusted = Pki::new(true);
        let (addr, _cache, _server) = serve(trusted.server(true)).await;
        let tcp = TcpStream::connect(addr).await.unwrap();
        let mut tls = trusted
            .connector(true)
            .connect(localhost(), tcp)
            .await
            .unwrap();
        let mut buf = Vec::new();
        assert_eq!(
            call(&mut tls, &mut buf, &["PING"]).await,
            Value::Simple("PONG".into())
        );

        // Without a certificate, or with one of another CA: the server refuses it in
        // the handshake (which TLS 1.3 lets the client believe done: the refusal
        // arrives as the reply).
        let other = Pki {
            ca: trusted.ca.clone(),
            server: (trusted.server.0.clone(), trusted.server.1.clone_key()),
            client: Pki::new(false).client,
        };
        for (pki, present) in [(&trusted, false), (&other, true)] {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let refused = match pki.connector(present).connect(localhost(), tcp).await {
                Err(_) => true,
                Ok(mut s) => {
                    let _ = s.write_all(&encode(&["PING"])).await;
                    let _ = s.flush().await;
                    let mut got = Vec::new();
                    let read = s.read_to_end(&mut got).await;
                    read.is_err() && got.is_empty()
                }
            };
            assert!(refused, "client certificate presented: {present}");
        }
        assert_eq!(
            call(&mut tls, &mut buf, &["PING"]).await,
            Value::Simple("PONG".into())
        );
    });
}
