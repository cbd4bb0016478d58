//! What the RESP tests share: a larder RESP server on a free port, a real
//! `redis-server` on another, and a small blocking client that sends commands and
//! reads replies with larder's own decoder.

#![allow(dead_code)]

use larder::resp::codec::{decode, parse_inline_owned};
use larder::resp::{RespConfig, RespServer, Value};
use larder::Cache;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A larder RESP server over a fresh cache, served by its own runtime (dropped with it).
pub struct Larder {
    pub port: u16,
    pub cache: Cache<String, Vec<u8>>,
    pub server: RespServer<Cache<String, Vec<u8>>>,
    _rt: tokio::runtime::Runtime,
}

impl Larder {
    pub fn start(config: RespConfig) -> Larder {
        let cache: Cache<String, Vec<u8>> = Cache::builder().build();
        Larder::start_with(cache, config)
    }

    pub fn start_with(cache: Cache<String, Vec<u8>>, config: RespConfig) -> Larder {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = RespServer::new(cache.clone(), config);
        rt.spawn(server.clone().serve(listener));
        Larder {
            port,
            cache,
            server,
            _rt: rt,
        }
    }

    /// Waits until the server counts `n` connected clients (closing takes a moment
    /// after the client side is gone).
    pub fn wait_clients(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.server.connected_clients() != n {
            assert!(
                Instant::now() < deadline,
                "{} clients, not {n}",
                self.server.connected_clients()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether `program` is on the PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A real `redis-server` on a free port, without persistence; killed on drop.
pub struct Redis {
    pub port: u16,
    child: Child,
}

impl Redis {
    /// `None` (with the reason printed) if `redis-server` is not installed.
    pub fn start() -> Option<Redis> {
        if !have("redis-server") {
            eprintln!("skipped: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let port = free_port();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                // larder has one database: SELECT 1 is out of range on both.
                "--databases",
                "1",
                "--daemonize",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server");
        let redis = Redis { port, child };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(mut c) = Client::connect(port) {
                if c.call(&["PING"]) == Value::Simple("PONG".into()) {
                    return Some(redis);
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking client: commands out as arrays of bulk strings, replies in through
/// larder's decoder.
pub struct Client {
    stream: BufReader<TcpStream>,
    buf: Vec<u8>,
}

impl Client {
    pub fn connect(port: u16) -> std::io::Result<Client> {
        let s = TcpStream::connect(("127.0.0.1", port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(Client {
            stream: BufReader::new(s),
            buf: Vec::new(),
        })
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.get_mut().write_all(bytes).unwrap();
    }

    pub fn send<A: AsRef<[u8]>>(&mut self, args: &[A]) {
        self.send_raw(&encode(args));
    }

    /// The next reply; `None` at end of stream.
    pub fn read(&mut self) -> Option<Value> {
        loop {
            if let Some((v, n)) = decode(&self.buf).expect("a valid reply") {
                self.buf.drain(..n);
                return Some(v);
            }
            let chunk = self.stream.fill_buf().ok()?;
            if chunk.is_empty() {
                return None;
            }
            let n = chunk.len();
            self.buf.extend_from_slice(chunk);
            self.stream.consume(n);
        }
    }

    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        self.send(args);
        self.read().expect("a reply before the connection closed")
    }

    /// Runs an inline-syntax line (`SET k "a b"`), split as redis-cli splits it.
    pub fn line(&mut self, line: &str) -> Value {
        let args = parse_inline_owned(line.as_bytes(), 0).expect("a valid command line");
        self.call(&args)
    }

    /// Whether the server closed the connection (reads to the end).
    pub fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        self.stream.read_to_end(&mut rest).is_ok() && rest.is_empty()
    }
}

pub fn encode<A: AsRef<[u8]>>(args: &[A]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        let a = a.as_ref();
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Runs `redis-cli -p port args...` and returns its stdout.
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
