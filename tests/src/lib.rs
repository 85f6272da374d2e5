//! # medledger-tests
//!
//! Harness for cross-process tests: it runs the real binaries (`medledger-ca`, `medledger`)
//! built by `cargo test --workspace`, on loopback ports chosen by the OS, each test in its
//! own temporary directory, and kills every process it started when the test ends.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

/// Path of a workspace binary next to the test executable (`target/<profile>/<name>`).
pub fn binary(name: &str) -> PathBuf {
    static CHECKED: std::sync::Mutex<Vec<(String, PathBuf)>> = std::sync::Mutex::new(Vec::new());
    let mut checked = CHECKED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, path)) = checked.iter().find(|(n, _)| n == name) {
        return path.clone();
    }
    let path = checked_binary(name);
    checked.push((name.to_string(), path.clone()));
    path
}

/// Locates `name` and refuses it if any source it is built from is newer.
fn checked_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binaries live in target/<profile>/deps");
    let path = profile_dir.join(name);
    let built = std::fs::metadata(&path).and_then(|m| m.modified()).unwrap_or_else(|_| {
        panic!(
            "{} is missing: build the binaries first (`cargo build --workspace --bins`; scripts/test does it)",
            path.display()
        )
    });
    // `cargo test` does not rebuild other packages' binaries: refuse to test a stale one.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root");
    // Only the crates the binary is built from: an edit elsewhere does not make it stale.
    let sources: &[&str] = match name {
        "medledger-ca" => &["proto", "crypto", "membership"],
        "medledger" => &["proto", "crypto", "client"],
        _ => &["proto", "crypto", "membership", "client"],
    };
    for source_dir in sources {
        if let Some(newer) = newest_file(&workspace.join(source_dir))
            && newer.1 > built
        {
            panic!(
                "{} is older than {}: rebuild with `cargo build --workspace --bins` (scripts/test does it)",
                path.display(),
                newer.0.display()
            );
        }
    }
    path
}

/// The most recently modified file under `dir` (sources only: skips `target`).
fn newest_file(dir: &Path) -> Option<(PathBuf, std::time::SystemTime)> {
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "target") {
                continue;
            }
            newest_file(&path)
        } else {
            entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .map(|t| (path, t))
        };
        if let Some(c) = candidate
            && newest.as_ref().is_none_or(|n| c.1 > n.1)
        {
            newest = Some(c);
        }
    }
    newest
}

/// `medledger-ca init --dir <dir>`; panics with the CA's output if it fails.
pub fn init_ca(dir: &Path) {
    let output = Command::new(binary("medledger-ca"))
        .args(["init", "--dir"])
        .arg(dir)
        .output()
        .expect("medledger-ca runs");
    assert!(
        output.status.success(),
        "medledger-ca init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `medledger-ca serve`, killed when dropped.
pub struct CaProcess {
    child: Child,
    pub url: String,
    pub dir: PathBuf,
}

impl CaProcess {
    /// Starts the CA on a free loopback port and waits until it listens.
    pub fn start(dir: &Path, cert_validity: &str) -> CaProcess {
        let mut child = Command::new(binary("medledger-ca"))
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--cert-validity",
                cert_validity,
                "--dir",
            ])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("medledger-ca starts");
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("reading the CA's first line");
        let addr = line
            .trim()
            .strip_prefix("medledger-ca listening on https://")
            .unwrap_or_else(|| panic!("unexpected first line from medledger-ca: {line:?}"))
            .to_string();
        let port = addr.rsplit(':').next().expect("address has a port");
        CaProcess {
            child,
            // The TLS certificate names localhost and 127.0.0.1; use the name.
            url: format!("https://localhost:{port}"),
            dir: dir.to_path_buf(),
        }
    }

    /// Kills the CA at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for CaProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The result of one `medledger --json ...` run.
#[derive(Debug)]
pub struct CliResult {
    pub success: bool,
    pub json: Value,
    pub stderr: String,
}

impl CliResult {
    /// The error kind (`unauthenticated`, `permission_denied`, ...) of a failed run.
    pub fn error_kind(&self) -> &str {
        self.json["error"]["kind"].as_str().unwrap_or("")
    }

    pub fn error_message(&self) -> &str {
        self.json["error"]["message"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn ok(self) -> Value {
        assert!(
            self.success,
            "medledger failed: {:?} {}",
            self.json, self.stderr
        );
        self.json
    }
}

/// Runs the `medledger` CLI with `--json`, against `ca_url`, with HOME set to `home`.
pub fn medledger(home: &Path, ca_url: &str, args: &[&str]) -> CliResult {
    let output: Output = Command::new(binary("medledger"))
        .arg("--json")
        .args(["--ca", ca_url])
        .args(args)
        .env("HOME", home)
        .env_remove("MEDLEDGER_WALLET")
        .env_remove("MEDLEDGER_CA_ROOT")
        .output()
        .expect("medledger runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or(Value::String(stdout.into_owned()));
    CliResult {
        success: output.status.success(),
        json,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}
