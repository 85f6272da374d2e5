//! A single-node Garage on loopback (`deploy/garage start`), the S3-compatible object store
//! the tests and the fault harness put the gateway in front of; stopped on drop.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::StoreLayout;

/// A running Garage and the settings `deploy/garage start` printed for it.
pub struct Garage {
    pub dir: PathBuf,
    pub endpoint: String,
    pub bucket: String,
    pub region: String,
    /// A 0600 file with `access_key_id` and `secret_access_key`.
    pub credentials_file: PathBuf,
    pid: Option<u32>,
}

/// Runs `deploy/garage`: the checkout this crate was built from, else `./deploy/garage` (a
/// binary copied elsewhere, run from a checkout).
fn deploy_garage(args: &[&str]) -> anyhow::Result<std::process::Output> {
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("the workspace root")?
        .join("deploy/garage");
    let script = if built_from.exists() {
        built_from
    } else {
        PathBuf::from("deploy/garage")
    };
    std::process::Command::new(&script)
        .args(args)
        .output()
        .with_context(|| format!("running {}", script.display()))
}

impl Garage {
    /// Starts Garage with its data under `dir` (Garage installed: `deploy/garage install`,
    /// which `scripts/test` runs).
    ///
    /// # Errors
    /// Garage is not installed or did not start: the script's words.
    pub fn start(dir: &Path) -> anyhow::Result<Garage> {
        let out = deploy_garage(&["start", &dir.display().to_string()])?;
        if !out.status.success() {
            bail!(
                "deploy/garage start failed (is Garage installed? `deploy/garage install`): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let get = |key: &str| -> anyhow::Result<String> {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_string)
                .with_context(|| format!("deploy/garage start printed no {key}: {text}"))
        };
        Ok(Garage {
            dir: dir.to_path_buf(),
            endpoint: get("S3_ENDPOINT")?,
            bucket: get("S3_BUCKET")?,
            region: get("S3_REGION")?,
            credentials_file: PathBuf::from(get("S3_CREDENTIALS_FILE")?),
            pid: std::fs::read_to_string(dir.join("garage.pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok()),
        })
    }

    /// The store this Garage is, as the gateway and `ledger verify` name it.
    pub fn layout(&self) -> StoreLayout {
        StoreLayout::S3 {
            endpoint: self.endpoint.clone(),
            bucket: self.bucket.clone(),
            region: self.region.clone(),
            credentials_file: self.credentials_file.clone(),
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = deploy_garage(&["stop", &self.dir.display().to_string()]);
        // Also when its directory is already gone with a test's.
        if let Some(pid) = self
            .pid
            .and_then(|p| rustix::process::Pid::from_raw(p as i32))
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}
