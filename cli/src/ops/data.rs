//! `get`, `set`, `del`: one key through any node, as a cluster-aware client does it
//! (`WireRequest` bytes over `Admin::request_raw`, following MOVED and ASK).

use std::net::SocketAddr;
use std::time::Duration;

use larder::cluster::wire::{ErrorKind, WireOp, WireRequest, WireResponse, FLAG_ASKING};
use larder::Codec;

use super::{resolve, Admin, OpsError};

/// Redirects (MOVED, ASK) followed before giving up.
const MAX_REDIRECTS: usize = 5;
/// TRYAGAIN answers retried (50 ms apart) before giving up.
const MAX_RETRIES: usize = 40;

fn encode<T: Codec>(what: &str, x: &T) -> Result<Vec<u8>, OpsError> {
    x.encode()
        .map_err(|e| OpsError::Usage(format!("cannot encode the {what}: {e}")))
}

/// Sends `op` to the node at `addr`, following MOVED and ASK (one request with
/// ASKING) up to 5 redirects, and retrying TRYAGAIN (a multi-key operation during a
/// move, a write permission that lapsed on a busy node) every 50 ms for up to 2 s.
/// `addr` unreachable is exit 2; a refusal or too many redirects exit 1.
async fn send(admin: &Admin, addr: SocketAddr, op: WireOp) -> Result<WireResponse, OpsError> {
    let mut to = addr;
    let mut flags = 0u8;
    let (mut redirects, mut retries) = (0usize, 0usize);
    loop {
        let req = WireRequest {
            flags,
            ack_replicas: 0,
            ack_timeout_ms: 0,
            op: op.clone(),
        };
        let (_, bytes) = admin.request_raw(to, &req.encode()).await.map_err(|e| {
            if to == addr {
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
        let ask = matches!(resp, WireResponse::Ask { .. });
        let again = match resp {
            WireResponse::Moved { addr: a, .. } | WireResponse::Ask { addr: a, .. } => {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(OpsError::Failed(format!(
                        "more than {MAX_REDIRECTS} redirects for one key (last to {a})"
                    )));
                }
                flags = if ask { FLAG_ASKING } else { 0 };
                to = resolve(&a).await?;
                continue;
            }
            WireResponse::TryAgain => "TRYAGAIN".to_string(),
            WireResponse::Error(_, text) if text.starts_with("TRYAGAIN") => text,
            WireResponse::Error(kind, text) => {
                let kind = match kind {
                    ErrorKind::ClusterDown if !text.starts_with("CLUSTERDOWN") => "CLUSTERDOWN ",
                    _ => "",
                };
                return Err(OpsError::Failed(format!("{kind}{text}")));
            }
            other => return Ok(other),
        };
        retries += 1;
        if retries > MAX_RETRIES {
            return Err(OpsError::Failed(again));
        }
        // Start over from the node asked first.
        (to, flags, redirects) = (addr, 0, 0);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
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
