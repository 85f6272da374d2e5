//! The peer's own identity on disk: its wallet directory (`signing.key`, the Ed25519 key in
//! PKCS#8 PEM; `cert.pem`, its enrollment certificate), read at start and by the renewal
//! ([`crate::renewal`]).

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use medledger_crypto::SigningIdentity;

/// The peer's own identity, read from its wallet directory.
pub struct PeerIdentity {
    pub signing: Arc<SigningIdentity>,
    pub certificate_der: Vec<u8>,
    pub name: String,
}

/// Largest wallet file read (a key or a certificate in PEM is well under 4 KiB).
const MAX_WALLET_FILE_BYTES: u64 = 64 * 1024;

/// A wallet file's text: a regular file (not a pipe or a device) of at most
/// [`MAX_WALLET_FILE_BYTES`].
fn read_wallet_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() || meta.len() > MAX_WALLET_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "not a regular file of at most {MAX_WALLET_FILE_BYTES} bytes"
        )));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_WALLET_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The peer's key and certificate from its wallet directory (`signing.key`, `cert.pem`).
///
/// # Errors
/// A file is missing, too large, or not the PEM it should be.
pub fn read_wallet(dir: &Path) -> anyhow::Result<PeerIdentity> {
    let key_path = dir.join("signing.key");
    let key_pem = read_wallet_file(&key_path)
        .with_context(|| format!("reading the peer's key {}", key_path.display()))?;
    let signing = SigningIdentity::from_pkcs8_pem(&key_pem)
        .map_err(|e| anyhow::anyhow!("{}: {e}", key_path.display()))?;
    let cert_path = dir.join("cert.pem");
    let cert_pem = read_wallet_file(&cert_path)
        .with_context(|| format!("reading the peer's certificate {}", cert_path.display()))?;
    let certificate_der = pem::parse(&cert_pem)
        .with_context(|| format!("{} is not PEM", cert_path.display()))?
        .into_contents();
    Ok(PeerIdentity {
        signing: Arc::new(signing),
        certificate_der,
        name: String::new(),
    })
}
