//! A wallet: one identity's keys and certificate in a directory of its own.
//!
//! ```text
//! DIR/signing.key     Ed25519 private key, PKCS#8 PEM, mode 0600 (also the TLS client key)
//! DIR/encryption.key  X25519 private key, hex, mode 0600
//! DIR/encryption-previous.key  earlier X25519 keys, hex, one per line, newest first, 0600
//! DIR/cert.pem        the enrollment certificate
//! DIR/ca-root.pem     the CA root the certificate chains to
//! DIR/wallet.json     name and CA address
//! ```
//!
//! Keys are created here, on the client, and never sent anywhere. Files are written to
//! temporary names and renamed into place, so an interrupted write never leaves a wallet
//! with a key that does not match its certificate.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use medledger_crypto::{
    EncryptionKey, EnrolledIdentity, RootCertificate, SigningIdentity,
    validate_enrollment_certificate,
};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::ClientError;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WalletInfo {
    pub name: String,
    pub ca_url: String,
}

/// Earlier encryption keys a wallet keeps at most (a renewal a year keeps 64 years).
pub const MAX_PREVIOUS_ENCRYPTION_KEYS: usize = 64;

pub struct Wallet {
    pub dir: PathBuf,
    pub info: WalletInfo,
    pub signing: SigningIdentity,
    pub encryption: EncryptionKey,
    /// The key ring (issue 19 item 2): X25519 keys of earlier certificates, newest first,
    /// kept across renewals so envelopes wrapped to them still open; dropped when a renewal
    /// says the keys were compromised.
    pub previous_encryption: Vec<EncryptionKey>,
    pub cert_pem: String,
    pub root_pem: String,
}

/// The default wallet location for `name`: `~/.medledger/<name>`.
pub fn default_wallet_dir(name: &str) -> Result<PathBuf, ClientError> {
    Ok(wallets_home()?.join(name))
}

pub fn wallets_home() -> Result<PathBuf, ClientError> {
    let home = std::env::var_os("HOME")
        .ok_or_else(|| ClientError::Usage("HOME is not set; pass --wallet DIR".into()))?;
    Ok(PathBuf::from(home).join(".medledger"))
}

pub fn pem_encode(label: &str, der: &[u8]) -> String {
    pem::encode_config(
        &pem::Pem::new(label, der.to_vec()),
        pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
    )
}

pub fn pem_decode(text: &str, label: &str) -> Result<Vec<u8>, String> {
    let block = pem::parse(text).map_err(|e| e.to_string())?;
    if block.tag() != label {
        return Err(format!(
            "expected a {label} PEM block, found {}",
            block.tag()
        ));
    }
    Ok(block.into_contents())
}

impl Wallet {
    /// Writes a new wallet. Refuses to overwrite an existing one.
    pub fn create(
        dir: &Path,
        info: WalletInfo,
        signing: SigningIdentity,
        encryption: EncryptionKey,
        cert_der: &[u8],
        root_der: &[u8],
    ) -> Result<Wallet, ClientError> {
        if dir.join("signing.key").exists() {
            return Err(ClientError::wallet(
                dir,
                "already holds an identity; choose another --wallet or use `medledger reenroll`",
            ));
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ClientError::wallet(dir, e))?;
        let wallet = Wallet {
            dir: dir.to_path_buf(),
            info,
            signing,
            encryption,
            previous_encryption: Vec::new(),
            cert_pem: pem_encode("CERTIFICATE", cert_der),
            root_pem: pem_encode("CERTIFICATE", root_der),
        };
        wallet.write_all()?;
        Ok(wallet)
    }

    /// Replaces keys and certificate (after reenrollment). With `keep_previous`, the
    /// encryption key replaced joins the key ring (at most
    /// [`MAX_PREVIOUS_ENCRYPTION_KEYS`], the oldest dropped); without, the ring is emptied
    /// (the keys were compromised).
    pub fn replace(
        &mut self,
        signing: SigningIdentity,
        encryption: EncryptionKey,
        cert_der: &[u8],
        keep_previous: bool,
    ) -> Result<(), ClientError> {
        let replaced = std::mem::replace(&mut self.encryption, encryption);
        if keep_previous {
            if replaced.public_key() != self.encryption.public_key() {
                self.previous_encryption.insert(0, replaced);
            }
            self.previous_encryption
                .truncate(MAX_PREVIOUS_ENCRYPTION_KEYS);
        } else {
            self.previous_encryption.clear();
        }
        self.signing = signing;
        self.cert_pem = pem_encode("CERTIFICATE", cert_der);
        self.write_all()
    }

    /// Every encryption key this wallet holds: the current one, then the key ring's, newest
    /// first (to open an envelope wrapped to any of them).
    pub fn encryption_keys(&self) -> impl Iterator<Item = &EncryptionKey> {
        std::iter::once(&self.encryption).chain(self.previous_encryption.iter())
    }

    fn write_all(&self) -> Result<(), ClientError> {
        let info =
            serde_json::to_vec_pretty(&self.info).map_err(|e| ClientError::wallet(&self.dir, e))?;
        let encryption_hex = Zeroizing::new(hex::encode(*self.encryption.to_bytes()));
        let previous_hex = Zeroizing::new(
            self.previous_encryption
                .iter()
                .map(|k| format!("{}\n", hex::encode(*k.to_bytes())))
                .collect::<String>(),
        );
        let signing_pem = self.signing.to_pkcs8_pem();
        let files: [(&str, &[u8], u32); 6] = [
            ("signing.key", signing_pem.as_bytes(), 0o600),
            ("encryption.key", encryption_hex.as_bytes(), 0o600),
            ("encryption-previous.key", previous_hex.as_bytes(), 0o600),
            ("ca-root.pem", self.root_pem.as_bytes(), 0o644),
            ("wallet.json", &info, 0o644),
            // The certificate goes last: it is what marks the wallet complete.
            ("cert.pem", self.cert_pem.as_bytes(), 0o644),
        ];
        // Write every file under a temporary name first, then rename them into place.
        for (name, contents, mode) in &files {
            write_file(&self.dir.join(format!("{name}.tmp")), contents, *mode)
                .map_err(|e| ClientError::wallet(&self.dir, e))?;
        }
        for (name, _, _) in &files {
            fs::rename(self.dir.join(format!("{name}.tmp")), self.dir.join(name))
                .map_err(|e| ClientError::wallet(&self.dir, e))?;
        }
        Ok(())
    }

    /// Opens a wallet and checks that its key matches its certificate.
    pub fn open(dir: &Path) -> Result<Wallet, ClientError> {
        let read = |name: &str| {
            fs::read_to_string(dir.join(name)).map_err(|e| {
                ClientError::wallet(
                    dir,
                    format!("{name}: {e} (enroll first with `medledger enroll`, or pass --wallet)"),
                )
            })
        };
        let read_secret = |name: &str| {
            let path = dir.join(name);
            let mode = fs::metadata(&path)
                .map_err(|e| ClientError::wallet(dir, format!("{name}: {e}")))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(ClientError::wallet(
                    dir,
                    format!(
                        "{name} is readable by others; run `chmod 600 {}`",
                        path.display()
                    ),
                ));
            }
            read(name).map(Zeroizing::new)
        };
        let info: WalletInfo = serde_json::from_str(&read("wallet.json")?)
            .map_err(|e| ClientError::wallet(dir, format!("wallet.json: {e}")))?;
        let signing = SigningIdentity::from_pkcs8_pem(&read_secret("signing.key")?)
            .map_err(|e| ClientError::wallet(dir, format!("signing.key: {e}")))?;
        let encryption_hex = read_secret("encryption.key")?;
        let encryption_bytes: [u8; 32] = hex::decode(encryption_hex.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| ClientError::wallet(dir, "encryption.key is not 32 bytes of hex"))?;
        // The key ring: absent in wallets made before it existed.
        let previous_encryption = if dir.join("encryption-previous.key").exists() {
            let text = read_secret("encryption-previous.key")?;
            text.lines()
                .filter(|line| !line.trim().is_empty())
                .take(MAX_PREVIOUS_ENCRYPTION_KEYS)
                .map(|line| {
                    hex::decode(line.trim())
                        .ok()
                        .and_then(|b| <[u8; 32]>::try_from(b).ok())
                        .map(EncryptionKey::from_bytes)
                        .ok_or_else(|| {
                            ClientError::wallet(
                                dir,
                                "encryption-previous.key holds a line that is not 32 bytes of hex",
                            )
                        })
                })
                .collect::<Result<Vec<_>, _>>()?
        } else {
            Vec::new()
        };
        let wallet = Wallet {
            dir: dir.to_path_buf(),
            info,
            signing,
            encryption: EncryptionKey::from_bytes(encryption_bytes),
            previous_encryption,
            cert_pem: read("cert.pem")?,
            root_pem: read("ca-root.pem")?,
        };
        let identity = wallet.certificate_identity()?;
        if identity.signing_key != wallet.signing.verifying_key()
            || identity.encryption_key != wallet.encryption.public_key()
        {
            return Err(ClientError::wallet(
                dir,
                "the keys do not match the certificate; the wallet is damaged",
            ));
        }
        Ok(wallet)
    }

    pub fn root(&self) -> Result<RootCertificate, ClientError> {
        RootCertificate::from_pem(&self.root_pem)
            .map_err(|e| ClientError::wallet(&self.dir, format!("ca-root.pem: {e}")))
    }

    pub fn cert_der(&self) -> Result<Vec<u8>, ClientError> {
        pem_decode(&self.cert_pem, "CERTIFICATE")
            .map_err(|e| ClientError::wallet(&self.dir, format!("cert.pem: {e}")))
    }

    /// What the certificate says, checked against the wallet's root at `now`. Revocation is
    /// the CA's and the ledger's to judge; this is a local check only.
    pub fn identity_at(&self, now: i64) -> Result<EnrolledIdentity, ClientError> {
        validate_enrollment_certificate(
            &self.cert_der()?,
            &self.root()?,
            now,
            &std::collections::HashSet::new(),
        )
        .map_err(|e| ClientError::wallet(&self.dir, format!("cert.pem: {e}")))
    }

    /// Whether the certificate should be renewed at `now` (Unix seconds): it is in the last
    /// quarter of the lifetime it was issued for, or its last 30 days, whichever is shorter
    /// ([`medledger_crypto::renewal_due_at`], as the CA warns, docs/membership.md), and has
    /// not expired (an expired certificate cannot be renewed).
    pub fn renewal_due(&self, now: i64) -> Result<bool, ClientError> {
        let identity = self.certificate_identity()?;
        Ok(now < identity.not_after
            && now >= medledger_crypto::renewal_due_at(identity.not_before, identity.not_after))
    }

    /// What the certificate says, whatever the time (an expired wallet still opens and can
    /// say it is expired).
    pub fn certificate_identity(&self) -> Result<EnrolledIdentity, ClientError> {
        // Parse at the certificate's own start time so an expired wallet still opens (and can
        // say it is expired): move the check time forward past any "not yet valid".
        let der = self.cert_der()?;
        let root = self.root()?;
        let none = std::collections::HashSet::new();
        let mut at = 0;
        loop {
            match validate_enrollment_certificate(&der, &root, at, &none) {
                Err(medledger_crypto::CertificateError::NotYetValid { not_before, .. })
                    if not_before > at =>
                {
                    at = not_before
                }
                other => {
                    return other
                        .map_err(|e| ClientError::wallet(&self.dir, format!("cert.pem: {e}")));
                }
            }
        }
    }
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let _ = fs::remove_file(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

/// Writes `contents` to `path` with mode 0600, atomically: a synced temporary file renamed
/// into place (for key files kept beside the wallet: record keys, study keys).
pub(crate) fn write_secret(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    write_file(&tmp, contents, 0o600)?;
    fs::rename(&tmp, path)
}

/// Reads a secret file written by [`write_secret`]: `None` if it does not exist; refused if
/// others may read it.
pub(crate) fn read_secret(path: &Path) -> Result<Option<Zeroizing<String>>, String> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err("readable by others; run chmod 600 on it".into());
    }
    fs::read_to_string(path)
        .map(|text| Some(Zeroizing::new(text)))
        .map_err(|e| e.to_string())
}
