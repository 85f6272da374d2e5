//! Where objects live: a folder on the local filesystem (the embedded default: no server to
//! run), or any S3-compatible service (Garage in tests and in deploy/). Both are reached
//! through `object_store`, so the gateway has one code path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;

/// An S3 bucket and how to reach it.
#[derive(Clone, Debug)]
pub struct S3Config {
    /// e.g. `http://127.0.0.1:3900` (plain HTTP is accepted for loopback endpoints only).
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    pub credentials: S3Credentials,
}

#[derive(Clone)]
pub struct S3Credentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Credentials({}, secret hidden)", self.access_key_id)
    }
}

impl S3Credentials {
    /// From the environment: `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`.
    pub fn from_env() -> anyhow::Result<S3Credentials> {
        let get = |name: &str| {
            std::env::var(name)
                .with_context(|| format!("{name} is not set (or pass --s3-credentials-file)"))
        };
        Ok(S3Credentials {
            access_key_id: get("AWS_ACCESS_KEY_ID")?,
            secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
        })
    }

    /// From a file of `key = value` lines with `access_key_id` and `secret_access_key`
    /// (mode 0600: the gateway refuses a secret others can read).
    pub fn from_file(path: &Path) -> anyhow::Result<S3Credentials> {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is readable by others; run `chmod 600 {}`",
                path.display(),
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)?;
        let mut id = None;
        let mut secret = None;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .with_context(|| format!("{}: expected key = value lines", path.display()))?;
            let value = value.trim().trim_matches('"').to_string();
            match key.trim() {
                "access_key_id" => id = Some(value),
                "secret_access_key" => secret = Some(value),
                other => bail!("{}: unknown key {other:?}", path.display()),
            }
        }
        Ok(S3Credentials {
            access_key_id: id.context("access_key_id is missing")?,
            secret_access_key: secret.context("secret_access_key is missing")?,
        })
    }
}

/// The object store the gateway writes to.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    Local { root: PathBuf },
    S3(S3Config),
}

impl std::fmt::Display for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreConfig::Local { root } => write!(f, "local folder {}", root.display()),
            StoreConfig::S3(s3) => write!(f, "S3 bucket {} at {}", s3.bucket, s3.endpoint),
        }
    }
}

fn is_loopback_http(endpoint: &str) -> bool {
    let Some(rest) = endpoint.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    let host = match host.rsplit_once(':') {
        Some((h, _)) => h,
        None => host,
    };
    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
}

impl StoreConfig {
    pub fn open(&self) -> anyhow::Result<Arc<dyn ObjectStore>> {
        match self {
            StoreConfig::Local { root } => {
                std::fs::create_dir_all(root)
                    .with_context(|| format!("creating the object folder {}", root.display()))?;
                Ok(Arc::new(LocalFileSystem::new_with_prefix(root)?))
            }
            StoreConfig::S3(s3) => {
                let http = s3.endpoint.starts_with("http://");
                if http && !is_loopback_http(&s3.endpoint) {
                    bail!(
                        "the S3 endpoint {} is plain HTTP on a network: use https:// (plain HTTP \
                         is accepted for a loopback endpoint only)",
                        s3.endpoint
                    );
                }
                let store = AmazonS3Builder::new()
                    .with_endpoint(&s3.endpoint)
                    .with_bucket_name(&s3.bucket)
                    .with_region(&s3.region)
                    .with_access_key_id(&s3.credentials.access_key_id)
                    .with_secret_access_key(&s3.credentials.secret_access_key)
                    .with_allow_http(http)
                    // Path-style requests: no DNS name per bucket (Garage without root_domain).
                    .with_virtual_hosted_style_request(false)
                    // Garage has no object tagging.
                    .with_disable_tagging(true)
                    .build()
                    .with_context(|| format!("configuring S3 at {}", s3.endpoint))?;
                Ok(Arc::new(store))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(is_loopback_http("http://127.0.0.1:3900"));
        assert!(is_loopback_http("http://localhost:3900/"));
        assert!(!is_loopback_http("http://10.0.0.5:3900"));
        assert!(!is_loopback_http("http://127.0.0.1.example.org:3900"));
        let config = StoreConfig::S3(S3Config {
            endpoint: "http://s3.hospital.example:3900".into(),
            bucket: "b".into(),
            region: "garage".into(),
            credentials: S3Credentials {
                access_key_id: "k".into(),
                secret_access_key: "s".into(),
            },
        });
        assert!(config.open().unwrap_err().to_string().contains("https://"));
    }

    #[test]
    fn credentials_file_must_be_private_and_complete() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s3.conf");
        std::fs::write(
            &path,
            "# Garage key\naccess_key_id = GK1\nsecret_access_key = \"s3cr3t\"\n",
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(
            S3Credentials::from_file(&path)
                .unwrap_err()
                .to_string()
                .contains("chmod 600")
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = S3Credentials::from_file(&path).unwrap();
        assert_eq!(
            (c.access_key_id.as_str(), c.secret_access_key.as_str()),
            ("GK1", "s3cr3t")
        );
        assert!(!format!("{c:?}").contains("s3cr3t"));
        std::fs::write(&path, "access_key_id = GK1\n").unwrap();
        assert!(S3Credentials::from_file(&path).is_err());
    }
}
