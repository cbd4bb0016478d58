//! larder-node's RESP server over TLS and with `[[resp_users]]`, against real clients:
//! `redis-cli --tls` (OpenSSL) and the `redis` crate (rustls, `rediss://`) with
//! certificates made here by rcgen, a plain-text client refused by the TLS port,
//! client certificates required by `tls_ca_cert_file`, and users' `AUTH` with Redis's
//! `NOPERM` and `WRONGPASS`.

mod common;

use common::{take_turn, Env, Node, NodeOpts};
use larder::cluster::admin_wire::AdminRequest;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether `program` is on the PATH.
fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A certificate and its key, written as `<name>.crt` and `<name>.key`.
struct Issued {
    cert: PathBuf,
    key: PathBuf,
}

/// A CA, and certificates it signs, written as PEM files into a directory.
struct Pki {
    dir: PathBuf,
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(dir.join(format!("{name}.crt")), cert.pem()).unwrap();
        Pki {
            dir: dir.to_path_buf(),
            cert,
            key,
        }
    }

    fn ca_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.crt"))
    }

    /// A server certificate for localhost and 127.0.0.1, or a client's.
    fn issue(&self, name: &str, server: bool) -> Issued {
        let key = rcgen::KeyPair::generate().unwrap();
        let names = if server {
            vec!["localhost".to_string(), "127.0.0.1".to_string()]
        } else {
            Vec::new()
        };
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let issued = Issued {
            cert: self.dir.join(format!("{name}.crt")),
            key: self.dir.join(format!("{name}.key")),
        };
        std::fs::write(&issued.cert, cert.pem()).unwrap();
        std::fs::write(&issued.key, key.serialize_pem()).unwrap();
        issued
    }
}

/// `redis-cli -p port <tls args> <args>`: its exit code and its stdout and stderr
/// together.
fn redis_cli(port: u16, tls: &[&Path], args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new("redis-cli");
    cmd.arg("-p").arg(port.to_string());
    let mut tls = tls.iter();
    if let Some(ca) = tls.next() {
        cmd.arg("--tls").arg("--cacert").arg(ca);
    }
    if let (Some(cert), Some(key)) = (tls.next(), tls.next()) {
        cmd.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.code(), text)
}

/// `redis-cli` with `commands` on stdin (one connection, one command a line): its
/// stdout.
fn redis_cli_script(port: u16, tls: &[&Path], commands: &str) -> String {
    let mut args = vec!["-p".into(), port.to_string().into()];
    if let Some(ca) = tls.first() {
        args.extend(["--tls".into(), "--cacert".into(), ca.as_os_str().to_owned()]);
    }
    common::redis_cli_stdin(&args, commands)
}

/// A connection of the `redis` crate over TLS (`rediss://`), trusting `ca` and
/// presenting `client` (certificate and key files) if given.
fn rediss(port: u16, ca: &Path, client: Option<&Issued>) -> redis::RedisResult<redis::Connection> {
    let read = |p: &Path| std::fs::read(p).unwrap();
    let certs = redis::TlsCertificates {
        client_tls: client.map(|c| redis::ClientTlsConfig {
            client_cert: read(&c.cert),
            client_key: read(&c.key),
        }),
        root_cert: Some(read(ca)),
    };
    redis::Client::build_with_tls(format!("rediss://127.0.0.1:{port}/"), certs)?
        .get_connection_with_timeout(Duration::from_secs(30))
}

/// Retries `f` until it returns true, for at most `within`.
fn eventually(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A node with a RESP listener and `extra` configuration, owning every slot (a
/// one-node cluster), once it answers `SET` through `tls` (`[]`: plain).
async fn start_node(env: &Env, name: &str, extra: &str, tls: &[&Path], auth: &str) -> Node {
    let opts = NodeOpts {
        resp: true,
        ..NodeOpts::default()
    };
    let node = Node::start_with(env, name, opts, extra);
    env.admin()
        .ok(node.addr, &AdminRequest::AddSlots(vec![(0, 16383)]))
        .await
        .expect("the node takes every slot");
    let port = node.addr.port();
    let tls: Vec<PathBuf> = tls.iter().map(|p| p.to_path_buf()).collect();
    let auth = auth.to_string();
    let log = node.log();
    tokio::task::spawn_blocking(move || {
        let tls: Vec<&Path> = tls.iter().map(PathBuf::as_path).collect();
        eventually(
            &format!("the node serves its slots; log:\n{log}"),
            Duration::from_secs(60),
            || redis_cli_script(port, &tls, &format!("{auth}SET ready 1\n")).ends_with("OK\n"),
        );
    })
    .await
    .unwrap();
    node
}

/// Waits until the node's log has a line with every one of `words`.
fn wait_log(node: &Node, words: &[&str]) {
    eventually(
        &format!("a log line with {words:?}; log:\n{}", node.log()),
        Duration::from_secs(30),
        || {
            node.log()
                .lines()
                .any(|l| words.iter().all(|w| l.contains(w)))
        },
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cli_over_tls_and_a_plain_client_refused() {
    if !have("redis-cli") {
        eprintln!("skipped: redis-cli is not installed (apt-get install redis-tools)");
        return;
    }
    let _turn = take_turn().await;
    let env = Env::new();
    let pki = Pki::new(env.path(), "ca");
    let server = pki.issue("server", true);
    let stranger = Pki::new(env.path(), "stranger-ca");
    let ca = pki.ca_file("ca");
    let extra = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\n",
        server.cert.display().to_string(),
        server.key.display().to_string()
    );
    let node = start_node(&env, "t", &extra, &[&ca], "").await;
    let port = node.addr.port();
    assert!(
        node.log().contains("RESP clients over TLS on"),
        "{}",
        node.log()
    );

    let ca2 = ca.clone();
    tokio::task::spawn_blocking(move || {
        let ca = ca2.as_path();
        assert_eq!(
            redis_cli(port, &[ca], &["PING"]),
            (Some(0), "PONG\n".into())
        );
        assert_eq!(
            redis_cli(port, &[ca], &["SET", "greeting", "hello over tls"]),
            (Some(0), "OK\n".into())
        );
        assert_eq!(
            redis_cli(port, &[ca], &["GET", "greeting"]),
            (Some(0), "hello over tls\n".into())
        );
        // Pipelined through one connection.
        let out = redis_cli_script(port, &[ca], &"INCR n\n".repeat(50));
        let expected: String = (1..=50).map(|i| format!("{i}\n")).collect();
        assert_eq!(out, expected);

        // A client library on rustls, and a reply larger than a TLS record.
        use redis::Commands;
        let mut con = rediss(port, ca, None).expect("a rediss:// connection");
        let big = "v".repeat(1 << 20);
        let () = con.set("big", &big).unwrap();
        let got: String = con.get("big").unwrap();
        assert!(got == big, "{} bytes back", got.len());
        let got: String = con.get("greeting").unwrap();
        assert_eq!(got, "hello over tls");
    })
    .await
    .unwrap();

    // A plain-text client: no RESP reply, the connection closed, the reason logged.
    let mut plain = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    plain.write_all(b"PING\r\n").unwrap();
    // Until the server closes it (a reset is a close too: it may close with the
    // client's bytes unread).
    let mut got = Vec::new();
    if let Err(e) = plain.read_to_end(&mut got) {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    assert!(!String::from_utf8_lossy(&got).contains("PONG"), "{got:?}");
    wait_log(
        &node,
        &["TLS handshake with 127.0.0.1:", "failed", "corrupt message"],
    );

    // A client that does not trust the server's CA refuses it; the node goes on.
    let stranger_ca = stranger.ca_file("stranger-ca");
    let ca2 = ca.clone();
    tokio::task::spawn_blocking(move || {
        let (code, text) = redis_cli(port, &[&stranger_ca], &["PING"]);
        assert!(code != Some(0) && !text.contains("PONG"), "{code:?} {text}");
        assert_eq!(
            redis_cli(port, &[ca2.as_path()], &["GET", "greeting"]),
            (Some(0), "hello over tls\n".into())
        );
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_ca_cert_file_requires_client_certificates() {
    if !have("redis-cli") {
        eprintln!("skipped: redis-cli is not installed (apt-get install redis-tools)");
        return;
    }
    let _turn = take_turn().await;
    let env = Env::new();
    let pki = Pki::new(env.path(), "ca");
    let server = pki.issue("server", true);
    let client = pki.issue("client", false);
    let stranger = Pki::new(env.path(), "stranger-ca").issue("stranger", false);
    let ca = pki.ca_file("ca");
    // tls_auth_clients is left out: with a CA it is "yes", as in Redis.
    let extra = format!(
        "tls_cert_file = {:?}\ntls_key_file = {:?}\ntls_ca_cert_file = {:?}\n",
        server.cert.display().to_string(),
        server.key.display().to_string(),
        ca.display().to_string(),
    );
    let node = Node::start_with(
        &env,
        "m",
        NodeOpts {
            resp: true,
            ..NodeOpts::default()
        },
        &extra,
    );
    let port = node.addr.port();

    let (ca2, cert, key) = (ca.clone(), client.cert.clone(), client.key.clone());
    let client2 = Issued { cert, key };
    tokio::task::spawn_blocking(move || {
        let with_cert = [ca2.as_path(), client2.cert.as_path(), client2.key.as_path()];
        assert_eq!(
            redis_cli(port, &with_cert, &["PING"]),
            (Some(0), "PONG\n".into())
        );
        let mut con = rediss(port, &ca2, Some(&client2)).expect("a rediss:// connection");
        let pong: String = redis::cmd("PING").query(&mut con).unwrap();
        assert_eq!(pong, "PONG");
        // Without a certificate, the library's connection fails too.
        let refused = rediss(port, &ca2, None)
            .and_then(|mut con| redis::cmd("PING").query::<String>(&mut con));
        assert!(refused.is_err(), "{refused:?}");
    })
    .await
    .unwrap();

    // Without a certificate: refused in the handshake, the reason logged.
    let ca2 = ca.clone();
    let (code, text) = tokio::task::spawn_blocking(move || redis_cli(port, &[&ca2], &["PING"]))
        .await
        .unwrap();
    assert!(code != Some(0) && !text.contains("PONG"), "{code:?} {text}");
    wait_log(&node, &["TLS handshake with", "peer sent no certificates"]);

    // A certificate of another CA: refused too.
    let ca2 = ca.clone();
    let (code, text) = tokio::task::spawn_blocking(move || {
        redis_cli(port, &[&ca2, &stranger.cert, &stranger.key], &["PING"])
    })
    .await
    .unwrap();
    assert!(code != Some(0) && !text.contains("PONG"), "{code:?} {text}");
    wait_log(&node, &["TLS handshake with", "invalid peer certificate"]);

    // The node still serves the client with a certificate.
    let (cert, key) = (client.cert.clone(), client.key.clone());
    let out = tokio::task::spawn_blocking(move || redis_cli(port, &[&ca, &cert, &key], &["PING"]))
        .await
        .unwrap();
    assert_eq!(out, (Some(0), "PONG\n".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_users_from_the_configuration() {
    if !have("redis-cli") {
        eprintln!("skipped: redis-cli is not installed (apt-get install redis-tools)");
        return;
    }
    let _turn = take_turn().await;
    let env = Env::new();
    let extra = "requirepass = \"admin-pass\"\n\n\
                 [[resp_users]]\nname = \"reader\"\npassword = \"r-pass\"\nread_only = true\n\n\
                 [[resp_users]]\nname = \"writer\"\npassword = \"w-pass\"\n";
    let node = start_node(&env, "u", extra, &[], "AUTH admin-pass\n").await;
    let port = node.addr.port();

    let out = tokio::task::spawn_blocking(move || {
        [
            // Nothing before AUTH.
            redis_cli_script(port, &[], "GET ready\n"),
            redis_cli_script(
                port,
                &[],
                "AUTH reader r-pass\nGET ready\nSET k from-reader\nDEL ready\nGET k\n",
            ),
            redis_cli_script(port, &[], "AUTH writer w-pass\nSET k from-writer\nGET k\n"),
            redis_cli_script(port, &[], "AUTH writer r-pass\nAUTH nobody x\nGET k\n"),
            redis_cli_script(port, &[], "HELLO 2 AUTH reader r-pass\nSET k x\n"),
        ]
    })
    .await
    .unwrap();
    // redis-cli prints an error reply, not a tty, with a blank line after it.
    let error = |text: &str| format!("{text}\n\n");
    let noperm = |cmd: &str| {
        error(&format!(
            "NOPERM User reader has no permissions to run the '{cmd}' command"
        ))
    };
    let wrongpass = error("WRONGPASS invalid username-password pair or user is disabled.");
    let noauth = error("NOAUTH Authentication required.");
    assert_eq!(out[0], noauth);
    // GET of the key the reader could not set: nil, an empty line.
    assert_eq!(
        out[1],
        format!("OK\n1\n{}{}\n", noperm("set"), noperm("del"))
    );
    assert_eq!(out[2], "OK\nOK\nfrom-writer\n");
    assert_eq!(out[3], format!("{wrongpass}{wrongpass}{noauth}"));
    assert!(out[4].ends_with(&noperm("set")), "{}", out[4]);
}
