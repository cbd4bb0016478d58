//! A Redis-protocol server over a larder cache: `cargo run --example resp_server
//! --features resp -- 127.0.0.1:6380`, then `redis-cli -p 6380`.
//!
//! With a second argument `N`, the server runs on N event-loop threads of its own
//! (`RespServer::spawn`, as larder-node serves); without it, its connections are
//! tasks of this program's tokio runtime (`RespServer::serve`).

/// With `--features jemalloc`, the server allocates through jemalloc, as larder-node
/// does.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use larder::resp::{RespConfig, RespServer};
use larder::Cache;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:6380".into());
    let threads: Option<usize> = args.next().and_then(|n| n.parse().ok());
    let cache: Cache<String, Vec<u8>> = Cache::builder().max_memory(256 << 20).build();
    let server = RespServer::new(cache, RespConfig::default());
    match threads {
        Some(n) => {
            let running = server.spawn(std::net::TcpListener::bind(&addr)?, n)?;
            println!("listening on {} ({n} event loops)", running.local_addr());
            // Serves until the program is stopped.
            std::future::pending::<()>().await;
            drop(running);
            Ok(())
        }
        None => {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            println!("listening on {}", listener.local_addr()?);
            server.serve(listener).await
        }
    }
}
