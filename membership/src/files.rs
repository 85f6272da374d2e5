//! The CA directory (`medledger-ca init --dir D`) and how its secrets are written.
//!
//! ```text
//! D/ca-root.pem       root certificate (public; give it to every client and peer)
//! D/ca-root.key       root private key, PKCS#8 PEM, mode 0600
//! D/tls/server.pem    the CA's TLS server certificate (issued by the root)
//! D/tls/server.key    its private key, mode 0600
//! D/admin.secret      the bootstrap admin's one-time enrollment secret, mode 0600
//! D/db/               RocksDB: identities, certificates, revocations
//! ```

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct CaDir {
    pub root: PathBuf,
}

impl CaDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CaDir { root: root.into() }
    }
    pub fn root_certificate(&self) -> PathBuf {
        self.root.join("ca-root.pem")
    }
    pub fn root_key(&self) -> PathBuf {
        self.root.join("ca-root.key")
    }
    pub fn tls_certificate(&self) -> PathBuf {
        self.root.join("tls").join("server.pem")
    }
    pub fn tls_key(&self) -> PathBuf {
        self.root.join("tls").join("server.key")
    }
    pub fn admin_secret(&self) -> PathBuf {
        self.root.join("admin.secret")
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("db")
    }
}

/// Writes a secret to a new file readable by its owner only (0600). Refuses to overwrite.
pub fn write_private(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_new(path, contents, 0o600)
}

/// Writes a public file (certificate). Refuses to overwrite.
pub fn write_public(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    write_new(path, contents, 0o644)
}

fn write_new(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Reads a private key file, refusing one that group or others can read.
pub fn read_private(path: &Path) -> std::io::Result<String> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "{} is readable by others (mode {:o}); run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        ));
    }
    fs::read_to_string(path)
}
