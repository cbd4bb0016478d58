//! `get`, `set`, `del`: one key through any node, as a cluster-aware client does it
//! (`WireRequest` bytes over `Admin::request_raw`, following MOVED and ASK).

use std::net::SocketAddr;
use std::time::Duration;

use larder::cluster::wire::{ErrorKind, WireOp, WireRequest, WireResponse, FLAG_ASKING};
use larder::Codec;

use super::{resolve, Admin, OpsError};

/// Redirects (MOVED, ASK) and TRYAGAINs followed before giving up.
const MAX_REDIRECTS: usize = 5;

fn encode<T: Codec>(what: &str, x: &T) -> Result<Vec<u8>, OpsError> {
    x.encode()
        .map_err(|e| OpsError::Usage(format!("cannot encode the {what}: {e}")))
}

/// Sends `op` to the node at `addr`, following MOVED (and remembering nothing) and
/// ASK (one request with ASKING), up to 5 redirects; TRYAGAIN waits 50 ms and
/// retries. `addr` unreachable is exit 2; a refusal or a redirect loop exit 1.
async fn send(admin: &Admin, addr: SocketAddr, op: WireOp) -> Result<WireResponse, OpsError> {
    let mut to = addr;
    let mut flags = 0u8;
    for hop in 0..=MAX_REDIRECTS {
        let req = WireRequest {
            flags,
            ack_replicas: 0,
            ack_timeout_ms: 0,
            op: op.clone(),
        };
        let (_, bytes) = admin.request_raw(to, &req.encode()).await.map_err(|e| {
            if hop == 0 {
                OpsError::Unreachable {
                    addr: to.to_string(),
                    source: e,
                }
            } else {
                OpsError::Failed(format!("redirected to {to}, which cannot be reached: {e}"))
            }
        })?;
        let resp = WireResponse::decode(&bytes)
            .map_err(|e| OpsError::Failed(format!("bad answer from {to}: {e}")))?;
        match resp {
            WireResponse::Moved { addr: a, .. } => {
                to = resolve(&a).await?;
                flags = 0;
            }
            WireResponse::Ask { addr: a, .. } => {
                to = resolve(&a).await?;
                flags = FLAG_ASKING;
            }
            WireResponse::TryAgain => {
                flags = 0;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            WireResponse::Error(kind, text) => {
                let kind = match kind {
                    ErrorKind::ClusterDown => "CLUSTERDOWN ",
                    _ => "",
                };
                return Err(OpsError::Failed(format!("{kind}{text}")));
            }
            other => return Ok(other),
        }
    }
    Err(OpsError::Failed(format!(
        "more than {MAX_REDIRECTS} redirects for one key (last to {to})"
    )))
}

fn unexpected(r: WireResponse) -> OpsError {
    OpsError::Failed(format!("unexpected answer {r:?}"))
}

/// The value of `key` (a `String` key of a `ClusterCache<String, Vec<u8>>`, as
/// `larder-node` runs), asked of the node at `addr`.
pub async fn get(admin: &Admin, addr: SocketAddr, key: &str) -> Result<Option<Vec<u8>>, OpsError> {
    let k = encode("key", &key.to_string())?;
    match send(admin, addr, WireOp::Get(k)).await? {
        WireResponse::Value(None) => Ok(None),
        WireResponse::Value(Some(b)) => Vec::<u8>::decode(&b)
            .map(Some)
            .map_err(|e| OpsError::Failed(format!("the value is not a byte string: {e}"))),
        r => Err(unexpected(r)),
    }
}

/// Sets `key` to `value` (no expiry), through the node at `addr`.
pub async fn set(admin: &Admin, addr: SocketAddr, key: &str, value: &[u8]) -> Result<(), OpsError> {
    let op = WireOp::Set {
        key: encode("key", &key.to_string())?,
        value: encode("value", &value.to_vec())?,
        expire_at_ms: None,
    };
    match send(admin, addr, op).await? {
        WireResponse::Done => Ok(()),
        WireResponse::NotAcked { acked, needed } => Err(OpsError::Failed(format!(
            "written, but acknowledged by {acked} of {needed} replicas"
        ))),
        r => Err(unexpected(r)),
    }
}

/// Deletes `key` through the node at `addr`; whether it existed.
pub async fn del(admin: &Admin, addr: SocketAddr, key: &str) -> Result<bool, OpsError> {
    let k = encode("key", &key.to_string())?;
    match send(admin, addr, WireOp::Del(k)).await? {
        WireResponse::Bool(b) => Ok(b),
        r => Err(unexpected(r)),
    }
}
