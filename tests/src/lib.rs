//! # medledger-tests
//!
//! Harness for cross-process tests: it runs the real binaries (`medledger-ca`, `medledger`)
//! built by `cargo test --workspace`, on loopback ports chosen by the OS, each test in its
//! own temporary directory, and kills every process it started when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use medledger_devnet::process::{Binaries, GenesisPeer, Process};
use serde_json::Value;

pub mod local_network;

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
    // What each binary links of ours (its Cargo.toml, followed down).
    const PEER: [&str; 7] = [
        "proto",
        "crypto",
        "tls",
        "consensus",
        "chaincode",
        "execution",
        "peer",
    ];
    const SDK: [&str; 8] = [
        "proto",
        "crypto",
        "tls",
        "consensus",
        "chaincode",
        "execution",
        "deid",
        "sdk",
    ];
    let (first, own): (&[&str], &[&str]) = match name {
        "medledger-ca" => (&["proto", "crypto", "tls"], &["membership"]),
        "medledger" => (&SDK, &["devnet", "cli", "peer"]),
        "medledger-peer" => (&PEER, &[]),
        "medledger-gateway" => (&SDK, &["storage-gateway"]),
        "medledger-load" => (&SDK, &["devnet", "bench"]),
        _ => (&PEER, &["deid", "membership", "sdk", "devnet", "cli"]),
    };
    let sources: Vec<&str> = first.iter().chain(own).copied().collect();
    for source_dir in &sources {
        assert!(
            workspace.join(source_dir).is_dir(),
            "no crate folder {source_dir}: update the sources of {name} here"
        );
    }
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

/// The most recently modified file under `dir` (sources only: skips `target`, `tests` and
/// `benches`).
fn newest_file(dir: &Path) -> Option<(PathBuf, std::time::SystemTime)> {
    let mut newest: Option<(PathBuf, std::time::SystemTime)> = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let candidate = if path.is_dir() {
            // What the binary is built from: not a crate's own tests or benches.
            if path
                .file_name()
                .is_some_and(|n| n == "target" || n == "tests" || n == "benches")
            {
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

/// The workspace's server binaries, each checked fresh (see [`binary`]).
pub fn binaries() -> Binaries {
    let ca = binary("medledger-ca");
    binary("medledger-peer");
    binary("medledger-gateway");
    Binaries {
        dir: ca
            .parent()
            .expect("binaries live in a folder")
            .to_path_buf(),
    }
}

/// `medledger-ca init --dir <dir>`; panics with the CA's output if it fails.
pub fn init_ca(dir: &Path) {
    let output = binaries().ca_init(dir).output().expect("medledger-ca runs");
    assert!(
        output.status.success(),
        "medledger-ca init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A running `medledger-ca serve`, killed when dropped.
pub struct CaProcess {
    process: Process,
    pub url: String,
    pub dir: PathBuf,
}

impl CaProcess {
    /// Starts the CA on a free loopback port and waits until it listens.
    pub fn start(dir: &Path, cert_validity: &str) -> CaProcess {
        let mut command = binaries().ca_serve(dir, "127.0.0.1:0");
        command
            .args(["--cert-validity", cert_validity])
            .env("RUST_LOG", "warn");
        let log = dir.with_extension("log");
        let process = Process::start(command, &log, "medledger-ca listening on https://")
            .unwrap_or_else(|e| panic!("{e}"));
        let port = process
            .first_line
            .rsplit(':')
            .next()
            .expect("address has a port")
            .to_string();
        CaProcess {
            process,
            // The TLS certificate names localhost and 127.0.0.1; use the name.
            url: format!("https://localhost:{port}"),
            dir: dir.to_path_buf(),
        }
    }

    /// Kills the CA at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        self.process.kill();
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

/// A free loopback port for a server a test is about to start.
///
/// Ports come from below the kernel's ephemeral range (32768 on), so no outgoing connection of
/// a concurrent test can take one between this check and the server's bind, and from a
/// process-wide counter, so two tests of one binary never get the same one.
/// Every regular file under `root` (recursively, symbolic links not followed), except those
/// under a path in `skip`; sorted.
pub fn files_under(root: &Path, skip: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if skip.iter().any(|s| path.starts_with(s)) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive free loopback ports (see [`free_port`]).
pub fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7_919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let offset = NEXT.fetch_add(u32::from(n), Ordering::SeqCst) % SPAN;
        if offset + u32::from(n) > SPAN {
            continue;
        }
        let base = (LOW + offset) as u16;
        if (0..n).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok()) {
            return base;
        }
    }
    panic!(
        "no {n} free loopback ports between {LOW} and {}",
        LOW + SPAN
    );
}

/// The last lines of a log file, for a failure message (the temp dir goes when the test fails).
pub fn log_tail(path: &Path) -> String {
    medledger_devnet::process::log_tail(path, 20)
}

/// A running `medledger-peer serve`, killed (SIGKILL) when dropped.
pub struct PeerProcess {
    process: Option<Process>,
    /// Peers to catch up from while not one of the replicas (`--join`: `NAME@HOST:PORT` or
    /// `HOST:PORT`).
    join: Vec<String>,
    pub address: String,
    pub wallet: PathBuf,
    pub data_dir: PathBuf,
    pub genesis: PathBuf,
    pub log: PathBuf,
    /// Variables set for the process at each (re)start, e.g. a lie
    /// (`MEDLEDGER_FAULT_LIE`, debug builds).
    pub env: Vec<(String, String)>,
}

impl PeerProcess {
    pub fn start(wallet: &Path, genesis: &Path, data_dir: &Path, address: &str) -> PeerProcess {
        Self::start_joining(wallet, genesis, data_dir, address, &[])
    }

    /// A peer the admins added (docs/adr/0011): it catches up from the peers at `join`, and
    /// listens once it is one of the replicas.
    pub fn start_joining(
        wallet: &Path,
        genesis: &Path,
        data_dir: &Path,
        address: &str,
        join: &[String],
    ) -> PeerProcess {
        let mut peer = Self::unstarted(wallet, genesis, data_dir, address, join);
        peer.restart();
        peer
    }

    /// A peer not started yet ([`PeerProcess::restart`] starts it).
    fn unstarted(
        wallet: &Path,
        genesis: &Path,
        data_dir: &Path,
        address: &str,
        join: &[String],
    ) -> PeerProcess {
        PeerProcess {
            process: None,
            join: join.to_vec(),
            address: address.to_string(),
            wallet: wallet.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            genesis: genesis.to_path_buf(),
            log: data_dir.with_extension("log"),
            env: Vec::new(),
        }
    }

    /// Starts the process (again) and waits until it listens.
    pub fn restart(&mut self) {
        assert!(self.process.is_none(), "the peer is already running");
        let mut command = binaries().peer_serve(&self.wallet, &self.genesis, &self.data_dir);
        for source in &self.join {
            command.args(["--join", source]);
        }
        command.args(["--listen", &self.address]).env(
            "RUST_LOG",
            std::env::var("PEER_LOG").unwrap_or_else(|_| "info".into()),
        );
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        let process = Process::start(command, &self.log, "medledger-peer listening on ")
            .unwrap_or_else(|e| panic!("on {}: {e}", self.address));
        self.process = Some(process);
    }

    /// SIGKILL, as a crash or a power cut would.
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// SIGTERM, and wait for a graceful exit; returns whether it exited successfully.
    pub fn terminate(&mut self) -> bool {
        self.process.take().is_some_and(Process::terminate)
    }

    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    /// `medledger-peer blocks`: one line per block (number, header hash, state root, ...).
    pub fn blocks(&self) -> Vec<String> {
        let output = Command::new(binary("medledger-peer"))
            .arg("blocks")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .output()
            .expect("medledger-peer blocks runs");
        assert!(
            output.status.success(),
            "medledger-peer blocks failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The view a block's commit certificate was gathered in is metadata, not ledger
        // content: a peer that fetched the block after a view change holds the certificate
        // of the view that re-proposed it. Ledgers are compared without it.
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| {
                line.split(' ')
                    .filter(|field| !field.starts_with("view="))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A whole network on loopback: a CA, an enrolled admin, and `n` peers from one genesis.
pub struct TestNetwork {
    pub tmp: tempfile::TempDir,
    pub home: PathBuf,
    pub ca: CaProcess,
    pub peers: Vec<PeerProcess>,
    pub genesis: PathBuf,
}

impl TestNetwork {
    pub fn start(n: usize) -> TestNetwork {
        Self::start_with(n, &[])
    }

    /// [`TestNetwork::start`] with more `medledger-peer genesis` options (consensus
    /// parameters), e.g. `["--max-tx-lifetime-ms", "10000"]`.
    pub fn start_with(n: usize, genesis_options: &[&str]) -> TestNetwork {
        Self::start_with_env(n, genesis_options, &[])
    }

    /// [`TestNetwork::start_with`], every peer started with the variables `env` (e.g.
    /// `MEDLEDGER_PEER_RECONCILE_SECONDS`, or a lie naming one peer), kept for its restarts.
    pub fn start_with_env(n: usize, genesis_options: &[&str], env: &[(&str, &str)]) -> TestNetwork {
        let mut network = Self::start_ca_only();
        network.start_peers(n, genesis_options, env);
        network
    }

    /// A CA and its enrolled admin, no peers.
    pub fn start_ca_only() -> TestNetwork {
        let tmp = tempfile::tempdir().expect("temp dir");
        let home = tmp.path().join("home");
        std::fs::create_dir_all(&home).expect("home");
        let ca_dir = tmp.path().join("ca");
        init_ca(&ca_dir);
        let ca = CaProcess::start(&ca_dir, "365d");
        let network = TestNetwork {
            genesis: tmp.path().join("genesis.pb"),
            tmp,
            home,
            ca,
            peers: Vec::new(),
        };
        let secret = std::fs::read_to_string(ca_dir.join("admin.secret")).expect("admin secret");
        network.enroll("admin", secret.trim());
        network
    }

    fn start_peers(&mut self, n: usize, genesis_options: &[&str], env: &[(&str, &str)]) {
        let network = self;
        let ca_dir = network.ca.dir.clone();
        let mut specs = Vec::new();
        let mut addresses = Vec::new();
        // The second admin the genesis names (configuration changes need two), and the
        // auditor it names as a reader of blocks (wallet `auditor`).
        network.member("admin2", "admin");
        network.member("auditor", "auditor");
        for i in 0..n {
            let name = format!("peer{i}");
            network.member(&name, "peer");
            let address = format!("127.0.0.1:{}", free_port());
            specs.push(GenesisPeer {
                certificate: network.wallet(&name).join("cert.pem"),
                name,
                address: address.clone(),
            });
            addresses.push(address);
        }
        let admins =
            ["admin", "admin2"].map(|a| network.wallet(a).join("cert.pem").display().to_string());
        let auditor = network
            .wallet("auditor")
            .join("cert.pem")
            .display()
            .to_string();
        let output = binaries()
            .genesis(
                &ca_dir.join("ca-root.pem"),
                &specs,
                &[
                    "--request-timeout-ms",
                    "1500",
                    "--admin",
                    &admins[0],
                    "--admin",
                    &admins[1],
                    "--auditor",
                    &auditor,
                ]
                .iter()
                .chain(genesis_options)
                .map(|o| o.to_string())
                .collect::<Vec<_>>(),
                &network.genesis,
            )
            .output()
            .expect("medledger-peer genesis runs");
        assert!(
            output.status.success(),
            "genesis failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        // The administrators and the auditor enrolled before the network existed: pin their
        // wallets now.
        let genesis = network.genesis.display().to_string();
        for admin in ["admin", "admin2", "auditor"] {
            network
                .as_(admin, &["network", "pin", "--genesis", &genesis])
                .ok();
        }
        for (i, address) in addresses.iter().enumerate() {
            let wallet = network.wallet(&format!("peer{i}"));
            let data = network.tmp.path().join(format!("peer{i}"));
            let mut peer = PeerProcess::unstarted(&wallet, &network.genesis, &data, address, &[]);
            peer.env = env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            peer.restart();
            network.peers.push(peer);
        }
    }

    pub fn wallet(&self, name: &str) -> PathBuf {
        self.home.join("wallets").join(name)
    }

    /// The wallet `name` acts under on the ledger: a patient's record credential
    /// (`<wallet>/record`, docs/adr/0016) once `patient init` made one; else the wallet.
    pub fn acting_wallet(&self, name: &str) -> PathBuf {
        let record = self.wallet(name).join("record");
        if record.join("cert.pem").exists() {
            record
        } else {
            self.wallet(name)
        }
    }

    pub fn root(&self) -> PathBuf {
        self.ca.dir.join("ca-root.pem")
    }

    /// Runs the CLI as the holder of wallet `name`.
    pub fn as_(&self, name: &str, args: &[&str]) -> CliResult {
        let wallet = self.wallet(name).display().to_string();
        let root = self.root().display().to_string();
        let mut full = vec!["--wallet", wallet.as_str(), "--ca-root", root.as_str()];
        full.extend_from_slice(args);
        medledger(&self.home, &self.ca.url, &full)
    }

    /// Enrolls `name`, pinned to the network once its genesis block exists (as a user given
    /// it by the administrator would be).
    fn enroll(&self, name: &str, secret: &str) {
        let genesis = self.genesis.display().to_string();
        let mut args = vec!["enroll", "--name", name, "--secret", secret];
        if self.genesis.exists() {
            args.extend(["--genesis", genesis.as_str()]);
        }
        self.as_(name, &args).ok();
    }

    /// One configuration change through peer `via`: proposed by `admin` with `options`
    /// (`admin config propose` flags), approved by both admins the genesis names (`admin`,
    /// `admin2`), submitted. Returns what `submit` printed (JSON).
    pub fn configure(&self, via: usize, options: &[&str]) -> serde_json::Value {
        let file = self.propose(via, options);
        self.approve_and_submit(via, &file)
    }

    /// `admin config propose` by `admin` through peer `via` with `options`; returns the
    /// file it wrote.
    pub fn propose(&self, via: usize, options: &[&str]) -> String {
        static CHANGES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = CHANGES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let file = self.wallet("admin").join(format!("update-{n}.pb"));
        let file = file.to_str().expect("a UTF-8 path").to_string();
        let peer = self.address(via);
        let mut propose = vec!["--peer", peer.as_str(), "admin", "config", "propose"];
        propose.extend_from_slice(options);
        propose.extend_from_slice(&["-o", &file]);
        self.as_("admin", &propose).ok();
        file
    }

    /// The proposal in `file` approved by both admins (`admin`, `admin2`) and submitted
    /// through peer `via`. Returns what `submit` printed (JSON).
    pub fn approve_and_submit(&self, via: usize, file: &str) -> serde_json::Value {
        let peer = self.address(via);
        for admin in ["admin", "admin2"] {
            self.as_(
                admin,
                &["--peer", &peer, "admin", "config", "approve", file],
            )
            .ok();
        }
        self.as_(
            "admin",
            &["--peer", &peer, "admin", "config", "submit", file],
        )
        .ok()
    }

    /// Registers and enrolls `name` with `role`; returns the wallet directory.
    pub fn member(&self, name: &str, role: &str) -> PathBuf {
        self.member_with(name, role, &[])
    }

    /// As [`Self::member`], with more `admin register` arguments (`--attr K=V@FROM..TO`).
    pub fn member_with(&self, name: &str, role: &str, more: &[&str]) -> PathBuf {
        let mut args = vec!["admin", "register", "--name", name, "--role", role];
        args.extend_from_slice(more);
        let registered = self.as_("admin", &args).ok();
        let secret = registered["secret"].as_str().expect("a secret").to_string();
        self.enroll(name, &secret);
        self.wallet(name)
    }

    /// `host:port` of peer `i`.
    pub fn address(&self, i: usize) -> String {
        self.peers[i].address.clone()
    }

    /// Waits until every running peer has the same height (at least `at_least`), then
    /// returns the block listings; panics after `timeout`.
    pub fn converged(&self, at_least: u64, timeout: std::time::Duration) -> Vec<Vec<String>> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let listings: Vec<Vec<String>> = self
                .peers
                .iter()
                .filter(|p| p.is_running())
                .map(|p| p.blocks())
                .collect();
            let heights: Vec<usize> = listings.iter().map(Vec::len).collect();
            let same = heights.windows(2).all(|w| w[0] == w[1]);
            if same && heights[0] as u64 > at_least {
                return listings;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "peers did not converge: heights {heights:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

pub use medledger_devnet::garage::Garage;

/// Where a gateway keeps objects.
pub enum ObjectStoreArg<'a> {
    Local(PathBuf),
    Garage(&'a Garage),
}

/// A running `medledger-gateway`, killed on drop.
pub struct GatewayProcess {
    process: Process,
    pub address: String,
    pub log: PathBuf,
}

impl GatewayProcess {
    /// Enrolls an identity of role gateway named `name` and serves with it.
    pub fn start(
        net: &TestNetwork,
        name: &str,
        store: &ObjectStoreArg,
        extra: &[&str],
    ) -> GatewayProcess {
        net.member(name, "gateway");
        GatewayProcess::serve(net, name, store, extra)
    }

    /// Serves with the gateway identity `name` enrolled before (a restart: the same wallet
    /// and state directory, a new port).
    pub fn serve(
        net: &TestNetwork,
        name: &str,
        store: &ObjectStoreArg,
        extra: &[&str],
    ) -> GatewayProcess {
        let wallet = net.wallet(name);
        let state = net.tmp.path().join(format!("{name}-state"));
        let log = net.tmp.path().join(format!("{name}.log"));
        let address = format!("127.0.0.1:{}", free_port());
        let store_args: Vec<String> = match store {
            ObjectStoreArg::Local(dir) => vec!["--objects-dir".into(), dir.display().to_string()],
            ObjectStoreArg::Garage(g) => vec![
                "--s3-endpoint".into(),
                g.endpoint.clone(),
                "--s3-bucket".into(),
                g.bucket.clone(),
                "--s3-region".into(),
                g.region.clone(),
                "--s3-credentials-file".into(),
                g.credentials_file.display().to_string(),
            ],
        };
        let mut command =
            binaries().gateway_serve(&wallet, &net.address(0), &address, &state, &store_args);
        command.args(extra).env("RUST_LOG", "info");
        let process = Process::start(command, &log, "medledger-gateway listening on ")
            .unwrap_or_else(|e| panic!("{e}"));
        GatewayProcess {
            process,
            address,
            log,
        }
    }

    /// Kills the process (SIGKILL: a crash), as dropping it does.
    pub fn kill(&mut self) {
        self.process.kill();
    }
}
