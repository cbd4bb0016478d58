//! A Redis-protocol server over a larder cache: `cargo run --example resp_server
//! --features resp -- 127.0.0.1:6380`, then `redis-cli -p 6380`.

/// With `--features jemalloc`, the server allocates through jemalloc, as larder-node
/// does.
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: larder::Jemalloc = larder::Jemalloc;

use larder::resp::{RespConfig, RespServer};
use larder::Cache;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:6380".into());
    let cache: Cache<String, Vec<u8>> = Cache::builder().max_memory(256 << 20).build();
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on {}", listener.local_addr()?);
    RespServer::new(cache, RespConfig::default())
        .serve(listener)
        .await
}
