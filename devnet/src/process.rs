//! The network's processes as commands, defined once: `network up` (detached, watched by
//! pid file), the benchmarks and the end-to-end tests (attached, killed and restarted by
//! the test) start the CA, the peers and the gateway from these builders, so a flag changes
//! in one place. [`Process`] is an attached process that says when it listens.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// The folder holding `medledger-ca`, `medledger-peer` and `medledger-gateway`, and the
/// command line of each job they do.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub dir: PathBuf,
}

/// One genesis peer: its name, its enrollment certificate (PEM file) and its address.
#[derive(Clone, Debug)]
pub struct GenesisPeer {
    pub name: String,
    pub certificate: PathBuf,
    pub address: String,
}

impl Binaries {
    fn command(&self, program: &str) -> Command {
        Command::new(self.dir.join(program))
    }

    /// `medledger-ca init --dir DIR`: a new CA (root key, database, admin secret).
    pub fn ca_init(&self, dir: &Path) -> Command {
        let mut c = self.command("medledger-ca");
        c.arg("init").arg("--dir").arg(dir);
        c
    }

    /// `medledger-ca serve --dir DIR --listen ADDR`.
    pub fn ca_serve(&self, dir: &Path, listen: &str) -> Command {
        let mut c = self.command("medledger-ca");
        c.arg("serve")
            .arg("--dir")
            .arg(dir)
            .args(["--listen", listen]);
        c
    }

    /// `medledger-ca tls-renew --dir DIR [--host NAME]...`: a new TLS certificate for the CA
    /// from the same root.
    pub fn ca_tls_renew(&self, dir: &Path, hosts: &[&str]) -> Command {
        let mut c = self.command("medledger-ca");
        c.arg("tls-renew").arg("--dir").arg(dir);
        for host in hosts {
            c.args(["--host", host]);
        }
        c
    }

    /// `medledger-peer genesis`: the genesis block for `peers` under the CA root `ca_root`,
    /// with consensus parameters `parameters` (its flags, e.g. `--max-batch 256`), to `out`.
    pub fn genesis(
        &self,
        ca_root: &Path,
        peers: &[GenesisPeer],
        parameters: &[String],
        out: &Path,
    ) -> Command {
        let mut c = self.command("medledger-peer");
        c.arg("genesis").arg("--ca-root").arg(ca_root);
        for p in peers {
            c.arg("--peer").arg(format!(
                "{}={}@{}",
                p.name,
                p.certificate.display(),
                p.address
            ));
        }
        c.args(parameters).arg("-o").arg(out);
        c
    }

    /// `medledger-peer serve`: the peer of `wallet` in the network of `genesis`, its ledger
    /// under `data_dir` (it listens on its genesis address unless given `--listen`).
    pub fn peer_serve(&self, wallet: &Path, genesis: &Path, data_dir: &Path) -> Command {
        let mut c = self.command("medledger-peer");
        c.arg("serve")
            .arg("--wallet")
            .arg(wallet)
            .arg("--genesis")
            .arg(genesis)
            .arg("--data-dir")
            .arg(data_dir);
        c
    }

    /// `medledger-gateway serve`, submitting through `peer`, its journal under `state_dir`,
    /// objects where `store_args` say (`--objects-dir D` or the `--s3-*` flags).
    pub fn gateway_serve(
        &self,
        wallet: &Path,
        peer: &str,
        listen: &str,
        state_dir: &Path,
        store_args: &[String],
    ) -> Command {
        let mut c = self.command("medledger-gateway");
        c.arg("serve")
            .arg("--wallet")
            .arg(wallet)
            .args(["--peer", peer, "--listen", listen])
            .arg("--state-dir")
            .arg(state_dir)
            .args(store_args);
        c
    }
}

/// An attached process: its standard error appended to a log file, its first line of
/// standard output awaited (the servers print `<program> listening on <address>` once they
/// listen). Killed (SIGKILL) when dropped.
pub struct Process {
    child: Child,
    /// The first line it printed, trimmed.
    pub first_line: String,
    pub log: PathBuf,
}

impl Process {
    /// Starts `command` and waits for its first line of output, which must start with
    /// `ready`.
    ///
    /// # Errors
    /// The process did not start, or ended or said something else first: the message holds
    /// what it said and the end of its log.
    pub fn start(mut command: Command, log: &Path, ready: &str) -> Result<Process, String> {
        let program = command.get_program().to_string_lossy().into_owned();
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| format!("{}: {e}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            let _ = BufReader::new(stdout).read_line(&mut line);
        }
        if !line.starts_with(ready) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "{program} did not start: it said {line:?}; its log ends:\n{}",
                log_tail(log, 20)
            ));
        }
        Ok(Process {
            child,
            first_line: line.trim().to_string(),
            log: log.to_path_buf(),
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited by itself (it is reaped then).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, as a crash or a power cut would; waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for it to exit; whether it exited successfully.
    pub fn terminate(mut self) -> bool {
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        self.child.wait().map(|s| s.success()).unwrap_or(false)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
