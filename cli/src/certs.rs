//! The cluster CA and certificates on disk (`larder-cli certs init|issue`).
//!
//! A CA directory holds `ca.pem` (the CA certificate, which every node and tool
//! trusts) and `ca.key` (its private key, needed only to issue certificates; keep it
//! offline). [`issue`] writes `<prefix>.pem` and `<prefix>.key`: a certificate naming a
//! new random node id, and its key. The same kind of certificate serves a node and a
//! tool (`larder-cli` presents one too). Private keys are written with mode 0600, and
//! no function here overwrites an existing file.
//!
//! ```no_run
//! # fn main() -> Result<(), larder_cli::certs::CertError> {
//! use std::path::Path;
//! let dir = Path::new("certs");
//! larder_cli::certs::init(dir, "shop cluster")?;          // certs/ca.pem, certs/ca.key
//! let id = larder_cli::certs::issue(dir, dir.join("node1"))?; // certs/node1.pem, .key
//! let identity = larder_cli::certs::load_identity(
//!     &dir.join("node1.pem"),
//!     &dir.join("node1.key"),
//! )?;
//! assert_eq!(identity.id(), id);
//! # Ok(()) }
//! ```

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use larder::cluster::larder_cluster::net::certs::check_ca_cert;
use larder::cluster::larder_cluster::net::CertificateDer;
use larder::cluster::larder_cluster::net::{RevocationList, Role};
use larder::cluster::{ClusterCa, NodeId, NodeIdentity};
use rustls_pki_types::pem::PemObject;

/// The CA certificate's file name in a CA directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA private key's file name in a CA directory.
pub const CA_KEY: &str = "ca.key";

/// Why a certificate operation failed; every variant names the file concerned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read, written or created.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The file exists already; nothing was overwritten.
    #[error("{}: already exists (refusing to overwrite it; move it away first)", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// The file's contents are not a usable certificate or key.
    #[error("{}: {reason}", path.display())]
    Invalid {
        /// The file (for a certificate and key that do not match: the certificate).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertError + '_ {
    move |source| CertError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_text(path: &Path) -> Result<String, CertError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Creates `path` (it must not exist) and writes `text` to it, with mode 0600 if
/// `private`. The file is fsynced.
fn write_new(path: &Path, text: &str, private: bool) -> Result<(), CertError> {
    let mut opts = OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file: File = opts.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CertError::Exists {
                path: path.to_path_buf(),
            }
        } else {
            io_err(path)(e)
        }
    })?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err(path))
}

/// Writes several new files, all or none: refuses before writing anything if one of
/// them exists, and removes those written if a later one fails.
fn write_all_new(files: &[(&Path, &str, bool)]) -> Result<(), CertError> {
    for (path, _, _) in files {
        if path.exists() {
            return Err(CertError::Exists {
                path: path.to_path_buf(),
            });
        }
    }
    for (i, (path, text, private)) in files.iter().enumerate() {
        if let Err(e) = write_new(path, text, *private) {
            for (done, _, _) in &files[..i] {
                let _ = fs::remove_file(done);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn create_dir(dir: &Path) -> Result<(), CertError> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err(dir))
}

/// Creates a new cluster CA named `cluster_name` in `dir` (created if missing):
/// writes `dir/ca.pem` and `dir/ca.key` (mode 0600). Refuses, writing nothing, if
/// either file exists. Returns the path of `ca.pem`.
pub fn init(dir: &Path, cluster_name: &str) -> Result<PathBuf, CertError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    let ca = ClusterCa::generate(cluster_name).map_err(|e| CertError::Invalid {
        path: cert_path.clone(),
        reason: format!("cannot make the CA: {e}"),
    })?;
    create_dir(dir)?;
    write_all_new(&[
        (&cert_path, &ca.cert_pem(), false),
        (&key_path, &ca.key_pem(), true),
    ])?;
    Ok(cert_path)
}

/// Loads the CA of directory `dir` (`ca.pem` and `ca.key`), to issue certificates.
pub fn load_authority(dir: &Path) -> Result<ClusterCa, CertError> {
    let cert_path = dir.join(CA_CERT);
    let key_path = dir.join(CA_KEY);
    let cert = read_text(&cert_path)?;
    let key = read_text(&key_path)?;
    ClusterCa::from_pem(&cert, &key).map_err(|e| CertError::Invalid {
        path: cert_path,
        reason: format!("with {}: {e}", key_path.display()),
    })
}

/// A new random node id (from the OS's random source).
pub fn random_node_id() -> NodeId {
    let mut bytes = [0u8; 20];
    #[cfg(unix)]
    {
        use std::io::Read;
        if File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .is_ok()
        {
            return NodeId(bytes);
        }
    }
    // Elsewhere (or without /dev/urandom): std's randomly keyed hasher, three times.
    use std::hash::{BuildHasher, Hasher};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    for (i, chunk) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        h.write_u128(now);
        h.write_u32(std::process::id());
        chunk.copy_from_slice(&h.finish().to_be_bytes()[..chunk.len()]);
    }
    NodeId(bytes)
}

/// Issues a certificate for a new random node id with the CA of directory `dir`, and
/// writes it to `<out_prefix>.pem` and its key to `<out_prefix>.key` (mode 0600;
/// `out_prefix`'s directory is created if missing). Refuses, writing nothing, if
/// either file exists. Returns the new id. The certificate has the `node` role;
/// [`issue_with_roles`] issues a tool's.
pub fn issue(dir: &Path, out_prefix: impl AsRef<Path>) -> Result<NodeId, CertError> {
    issue_with_roles(dir, out_prefix, &[Role::Node])
}

/// [`issue`] with the given roles (`node`, `admin`, `client`; see
/// `larder_cluster::net::roles`): a node gets `node`, `larder-cli` `admin`, a
/// monitoring tool that only reads `client`.
pub fn issue_with_roles(
    dir: &Path,
    out_prefix: impl AsRef<Path>,
    roles: &[Role],
) -> Result<NodeId, CertError> {
    let prefix = out_prefix.as_ref();
    let cert_path = with_suffix(prefix, "pem");
    let key_path = with_suffix(prefix, "key");
    for path in [&cert_path, &key_path] {
        if path.exists() {
            return Err(CertError::Exists { path: path.clone() });
        }
    }
    let ca = load_authority(dir)?;
    let id = random_node_id();
    let identity = ca.issue_as(id, roles).map_err(|e| CertError::Invalid {
        path: dir.join(CA_CERT),
        reason: format!("cannot issue a certificate: {e}"),
    })?;
    if let Some(parent) = cert_path.parent() {
        create_dir(parent)?;
    }
    write_all_new(&[
        (&cert_path, &identity.cert_pem(), false),
        (&key_path, &identity.key_pem(), true),
    ])?;
    Ok(id)
}

/// The revocation list's file name in a CA directory.
pub const REVOKED: &str = "revoked.crl";

/// Revokes the certificates in the PEM files `certs` (the first certificate of each)
/// with the CA of directory `dir`: writes `dir/revoked.crl` anew (PEM, signed by the
/// CA) with every certificate it revoked before and these; a certificate the CA did
/// not sign refuses the whole call. With no file it writes the
/// list as it was (an empty one if there was none). The file is replaced atomically (written beside it,
/// fsynced, renamed), so a node that reads it meanwhile sees the old list or the new
/// one. Copy it to every node's `revocation_list` path; nodes load it when it
/// changes. Returns the list's path and how many certificates it revokes.
pub fn revoke(dir: &Path, certs: &[&Path]) -> Result<(PathBuf, usize), CertError> {
    let ca = load_authority(dir)?;
    let invalid = |path: &Path, reason: String| CertError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut leaves = Vec::new();
    for &cert in certs {
        let text = read_text(cert)?;
        let leaf = CertificateDer::pem_slice_iter(text.as_bytes())
            .next()
            .ok_or_else(|| invalid(cert, "no PEM certificate in the file".into()))?
            .map_err(|e| invalid(cert, format!("certificate PEM: {e}")))?;
        leaves.push(leaf);
    }
    let list_path = dir.join(REVOKED);
    let previous = match fs::read(&list_path) {
        Ok(bytes) => Some(
            RevocationList::from_bytes(&bytes).map_err(|e| invalid(&list_path, e.to_string()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err(&list_path)(e)),
    };
    let list = ca
        .revocation_list(previous.as_ref(), &leaves)
        .map_err(|e| invalid(&list_path, format!("cannot make the revocation list: {e}")))?;
    let tmp = with_suffix(&list_path, "tmp");
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, &list.pem(), false)?;
    fs::rename(&tmp, &list_path).map_err(io_err(&list_path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok((list_path, list.len()))
}

/// `prefix` with `.ext` appended (not replacing an extension: `node.1` gives
/// `node.1.pem`).
fn with_suffix(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// Loads a node or tool identity: a certificate (PEM, leaf first) naming a node id,
/// and its private key (PEM).
pub fn load_identity(cert: &Path, key: &Path) -> Result<NodeIdentity, CertError> {
    let cert_pem = read_text(cert)?;
    let key_pem = read_text(key)?;
    NodeIdentity::from_pem(&cert_pem, &key_pem).map_err(|e| CertError::Invalid {
        path: cert.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Loads the cluster CA certificate (PEM; the first certificate in the file).
/// Refuses a certificate that is not a CA's (a node's `.pem` given by mistake).
pub fn load_ca(path: &Path) -> Result<CertificateDer<'static>, CertError> {
    let text = read_text(path)?;
    let invalid = |reason: String| CertError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    match CertificateDer::pem_slice_iter(text.as_bytes()).next() {
        Some(Ok(der)) => {
            check_ca_cert(&der).map_err(|e| invalid(e.to_string()))?;
            Ok(der)
        }
        Some(Err(e)) => Err(invalid(format!("certificate PEM: {e}"))),
        None => Err(invalid(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_issue_and_load_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let ca_path = init(&dir, "test cluster").unwrap();
        assert_eq!(ca_path, dir.join(CA_CERT));
        let ca = load_ca(&ca_path).unwrap();

        let id = issue(&dir, dir.join("nodes/n1")).unwrap();
        let identity = load_identity(&dir.join("nodes/n1.pem"), &dir.join("nodes/n1.key")).unwrap();
        assert_eq!(identity.id(), id);
        let id2 = issue(&dir, dir.join("cli")).unwrap();
        assert_ne!(id, id2, "ids are random");

        // The reloaded CA is the one on disk.
        let authority = load_authority(&dir).unwrap();
        assert_eq!(authority.cert_der(), ca);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
            assert_eq!(mode(&dir.join("nodes/n1.key")), 0o600);
            assert_eq!(mode(&dir.join("cli.key")), 0o600);
        }
    }

    #[test]
    fn nothing_is_overwritten() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        init(dir, "one").unwrap();
        let before = fs::read(dir.join(CA_KEY)).unwrap();
        let err = init(dir, "two").unwrap_err();
        assert!(matches!(err, CertError::Exists { .. }), "{err}");
        assert!(err.to_string().contains("ca.pem"), "{err}");
        assert_eq!(fs::read(dir.join(CA_KEY)).unwrap(), before);

        // Only the key left over: still refused, and ca.pem is not created.
        let other = tmp.path().join("other");
        fs::create_dir(&other).unwrap();
        fs::write(other.join(CA_KEY), "x").unwrap();
        let err = init(&other, "three").unwrap_err();
        assert!(err.to_string().contains("ca.key"), "{err}");
        assert!(!other.join(CA_CERT).exists());

        issue(dir, dir.join("n")).unwrap();
        let cert = fs::read(dir.join("n.pem")).unwrap();
        let err = issue(dir, dir.join("n")).unwrap_err();
        assert!(err.to_string().contains("n.pem"), "{err}");
        assert_eq!(fs::read(dir.join("n.pem")).unwrap(), cert);
        // A half-present pair is refused before anything is written.
        fs::write(dir.join("m.key"), "x").unwrap();
        assert!(issue(dir, dir.join("m")).is_err());
        assert!(!dir.join("m.pem").exists());
    }

    #[test]
    fn errors_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let missing = dir.join("nope.pem");
        let err = load_ca(&missing).unwrap_err().to_string();
        assert!(err.contains("nope.pem"), "{err}");

        let junk = dir.join("junk.pem");
        fs::write(&junk, "hello").unwrap();
        let err = load_ca(&junk).unwrap_err().to_string();
        assert!(
            err.contains("junk.pem") && err.contains("no PEM certificate"),
            "{err}"
        );
        fs::write(
            &junk,
            "-----BEGIN CERTIFICATE-----\n%%%\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = load_ca(&junk).unwrap_err().to_string();
        assert!(err.contains("junk.pem") && err.contains("PEM"), "{err}");

        // A node's certificate given as the CA: refused, naming the file.
        init(&dir.join("ca"), "ca").unwrap();
        issue(&dir.join("ca"), dir.join("n1")).unwrap();
        let err = load_ca(&dir.join("n1.pem")).unwrap_err().to_string();
        assert!(
            err.contains("n1.pem") && err.contains("not a CA certificate"),
            "{err}"
        );
        load_ca(&dir.join("ca/ca.pem")).unwrap();

        // Issuing without a CA names the missing file.
        let err = issue(&dir.join("noca"), dir.join("x"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem"), "{err}");

        // A key that is not the certificate's.
        init(&dir.join("a"), "a").unwrap();
        init(&dir.join("b"), "b").unwrap();
        issue(&dir.join("a"), dir.join("na")).unwrap();
        issue(&dir.join("b"), dir.join("nb")).unwrap();
        let err = load_identity(&dir.join("na.pem"), &dir.join("junk.pem"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("na.pem"), "{err}");
        // The CA's key swapped for another CA's: refused, naming both files.
        fs::copy(dir.join("b/ca.key"), dir.join("a/ca.key.b")).unwrap();
        fs::rename(dir.join("b/ca.key"), dir.join("b/ca.key.orig")).unwrap();
        fs::copy(dir.join("a/ca.key"), dir.join("b/ca.key")).unwrap();
        let err = issue(&dir.join("b"), dir.join("nc"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca.pem") && err.contains("ca.key"), "{err}");
        assert!(err.contains("does not belong"), "{err}");
    }
}
