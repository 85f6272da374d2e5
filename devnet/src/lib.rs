//! A whole medledger network on one machine, on loopback: the membership CA, n ≥ 4 PBFT peers
//! with RocksDB ledgers and the storage gateway with a local object folder (or any S3
//! endpoint), each its own process, all under one directory (`medledger network up`).
//!
//! ```text
//! D/network.json        the layout: addresses, the object store (read by status, down, verify)
//! D/ca/                 the CA (root key 0600, database); D/ca.log, D/ca.pid
//! D/wallets/<name>/     admin, admin2, peer0..peerN-1, gateway, and the demo's users
//! D/genesis.pb          the genesis block (the network's identity)
//! D/<peer>/             a peer's RocksDB ledger; D/<peer>.log, D/<peer>.pid (peer0,
//!                       peer1, ...; `network add-peer` names the next one)
//! D/gateway/            the gateway's journal; D/objects/ the local object store
//! ```
//!
//! The first `up` creates the CA, identities and genesis block; every `up` starts what is not
//! running and waits until each peer is linked to all the others and the gateway answers.
//! `add_peer`/`remove_peer` change the peers through a configuration change the two local
//! admins approve (docs/adr/0011).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

pub mod garage;
pub mod participation;
pub mod process;
pub mod rekey;

use process::{Binaries, GenesisPeer};

use medledger_proto::v1;
use medledger_sdk::ca::{CaClient, TlsIdentity};
use medledger_sdk::error::ClientError;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::wallet::{Wallet, pem_decode};

/// Where a network's objects live.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StoreLayout {
    /// A folder on this machine (the embedded default).
    Local { dir: PathBuf },
    /// An S3-compatible endpoint (Garage, MinIO, AWS...).
    S3 {
        endpoint: String,
        bucket: String,
        region: String,
        /// A 0600 file with `access_key_id` and `secret_access_key`.
        credentials_file: PathBuf,
    },
}

impl StoreLayout {
    pub fn config(&self) -> anyhow::Result<medledger_sdk::store::StoreConfig> {
        Ok(match self {
            StoreLayout::Local { dir } => {
                medledger_sdk::store::StoreConfig::Local { root: dir.clone() }
            }
            StoreLayout::S3 {
                endpoint,
                bucket,
                region,
                credentials_file,
            } => medledger_sdk::store::StoreConfig::S3(medledger_sdk::store::S3Config {
                endpoint: endpoint.clone(),
                bucket: bucket.clone(),
                region: region.clone(),
                credentials: medledger_sdk::store::S3Credentials::from_file(credentials_file)?,
            }),
        })
    }

    /// The `medledger-gateway serve` flags naming this store.
    pub fn gateway_args(&self) -> Vec<String> {
        match self {
            StoreLayout::Local { dir } => {
                vec!["--objects-dir".into(), dir.display().to_string()]
            }
            StoreLayout::S3 {
                endpoint,
                bucket,
                region,
                credentials_file,
            } => vec![
                "--s3-endpoint".into(),
                endpoint.clone(),
                "--s3-bucket".into(),
                bucket.clone(),
                "--s3-region".into(),
                region.clone(),
                "--s3-credentials-file".into(),
                credentials_file.display().to_string(),
            ],
        }
    }
}

/// What `network up` set up, kept in `D/network.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Layout {
    pub dir: PathBuf,
    pub ca_listen: String,
    /// The addresses of the peers in force, in replica order.
    pub peers: Vec<String>,
    /// Their names, in the same order (empty in a layout written before peers could be
    /// added or removed: `peer0`, `peer1`, ...). See [`Layout::peer_name`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_names: Vec<String>,
    pub gateway_listen: String,
    pub store: StoreLayout,
}

impl Layout {
    pub fn ca_url(&self) -> String {
        let port = self.ca_listen.rsplit(':').next().unwrap_or("7054");
        format!("https://localhost:{port}")
    }
    pub fn ca_root(&self) -> PathBuf {
        self.dir.join("ca/ca-root.pem")
    }
    pub fn genesis(&self) -> PathBuf {
        self.dir.join("genesis.pb")
    }
    pub fn wallets(&self) -> PathBuf {
        self.dir.join("wallets")
    }
    pub fn admin_wallet(&self) -> PathBuf {
        self.wallets().join("admin")
    }
    /// The auditor's wallet ([`AUDITOR`]).
    pub fn auditor_wallet(&self) -> PathBuf {
        self.wallets().join(AUDITOR)
    }
    pub fn first_peer(&self) -> &str {
        &self.peers[0]
    }
    /// The name of the peer at `index` of [`Layout::peers`]: its wallet, data directory,
    /// log and pid file.
    pub fn peer_name(&self, index: usize) -> String {
        self.peer_names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("peer{index}"))
    }
    /// The `--join` argument for the peer at `index`: `NAME@HOST:PORT`, so that the joiner
    /// believes only that peer's certificate at that address.
    pub fn join_argument(&self, index: usize) -> String {
        format!(
            "{}@{}",
            self.peer_name(index),
            self.peers.get(index).map_or("", String::as_str)
        )
    }

    /// Every peer's name, in replica order.
    pub fn peer_names(&self) -> Vec<String> {
        (0..self.peers.len()).map(|i| self.peer_name(i)).collect()
    }

    /// This layout with the peer at `index` taken out (`None`: none) and peer `name` at
    /// `address` added last, if any: a configuration change's peers, in replica order.
    pub fn with_peers_changed(&self, index: Option<usize>, added: Option<(&str, &str)>) -> Layout {
        let mut changed = self.clone();
        changed.peer_names = self.peer_names();
        if let Some(i) = index {
            changed.peers.remove(i);
            changed.peer_names.remove(i);
        }
        if let Some((name, address)) = added {
            changed.peers.push(address.to_string());
            changed.peer_names.push(name.to_string());
        }
        changed
    }

    /// Reads `dir/network.json`.
    pub fn read(dir: &Path) -> Result<Layout, ClientError> {
        let path = dir.join("network.json");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            ClientError::Network(format!(
                "no network at {} ({e}); start one with `medledger network up --dir {}`",
                dir.display(),
                dir.display()
            ))
        })?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::Network(format!("{}: {e}", path.display())))
    }

    /// Writes `dir/network.json`.
    pub fn write(&self) -> Result<(), ClientError> {
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(self.dir.join("network.json"), text)
            .map_err(|e| ClientError::Network(format!("writing network.json: {e}")))
    }
}

/// The default network directory: `$MEDLEDGER_NETWORK_DIR`, else
/// `$XDG_DATA_HOME/medledger/network` (`~/.local/share/medledger/network`).
pub fn default_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("MEDLEDGER_NETWORK_DIR") {
        return PathBuf::from(dir);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."));
    data.join("medledger/network")
}

/// How to start a network.
#[derive(Clone, Debug)]
pub struct UpOptions {
    pub dir: PathBuf,
    /// How many peers a new network has (default 4); an existing one keeps its own
    /// (`add_peer`, `remove_peer` change them), and a different number given is refused.
    pub peers: Option<usize>,
    pub ca_listen: String,
    pub peer_port: u16,
    pub gateway_listen: String,
    /// None: a local folder under the directory.
    pub store: Option<StoreLayout>,
    /// Where medledger-ca, medledger-peer and medledger-gateway are.
    pub bin_dir: PathBuf,
    /// Consensus parameters written into the genesis block when the network is first created
    /// (`medledger-peer genesis` flags, e.g. `--max-batch 256`); ignored afterwards.
    pub genesis_args: Vec<String>,
}

/// One process of the network and how it is doing.
#[derive(Clone, Debug, Serialize)]
pub struct Component {
    pub name: String,
    pub address: String,
    pub pid: Option<u32>,
    pub running: bool,
    pub detail: String,
}

/// The folder the running `medledger` binary is in (its sibling binaries are there).
pub fn sibling_bin_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."))
}

fn net_err(what: impl std::fmt::Display) -> ClientError {
    ClientError::Network(what.to_string())
}

fn pid_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.pid"))
}

/// Whether the local network's peer `name` runs (its pid file names a running
/// `medledger-peer`).
pub fn peer_runs(layout: &Layout, name: &str) -> bool {
    running_pid(&layout.dir, name, "medledger-peer").is_some()
}

/// The pid in `D/name.pid` if that process runs and is the expected program.
fn running_pid(dir: &Path, name: &str, program: &str) -> Option<u32> {
    let pid: u32 = std::fs::read_to_string(pid_file(dir, name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A zombie has exited.
    if proc_state(pid)? == "Z" {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next()?;
    String::from_utf8_lossy(argv0)
        .ends_with(program)
        .then_some(pid)
}

/// The fields of `/proc/PID/stat` after the command in parentheses (state first, then ppid,
/// ...; utime and stime are at 11 and 12). `pid` may be `self`.
pub fn proc_stat_fields(pid: impl std::fmt::Display) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(
        stat.rsplit_once(')')?
            .1
            .split_whitespace()
            .map(str::to_string)
            .collect(),
    )
}

/// A process's state letter from `/proc/PID/stat`.
fn proc_state(pid: u32) -> Option<String> {
    proc_stat_fields(pid)?.into_iter().next()
}

fn program_of(name: &str) -> &'static str {
    if name == "ca" {
        "medledger-ca"
    } else if name == "gateway" {
        "medledger-gateway"
    } else {
        "medledger-peer"
    }
}

/// Runs a one-shot tool (`init`, `genesis`) to its end; its standard output.
fn run_tool(mut command: Command) -> Result<String, ClientError> {
    let bin = PathBuf::from(command.get_program());
    let job = command
        .get_args()
        .next()
        .map(|a| a.to_string_lossy().into_owned())
        .unwrap_or_default();
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| missing_binary(&bin, e))?;
    if !output.status.success() {
        return Err(net_err(format!(
            "{} {job} failed: {}",
            bin.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn missing_binary(bin: &Path, e: std::io::Error) -> ClientError {
    net_err(format!(
        "cannot run {}: {e}. Build every binary first: `cargo build --workspace --bins` \
         (or use scripts/medledger, which does)",
        bin.display()
    ))
}

/// Starts `command` (process `name`) in the background, logging to `D/name.log`, its pid in
/// `D/name.pid`. It runs in its own process group: a Ctrl-C in the terminal reaches
/// `network up`, which then stops every process in order.
fn spawn(dir: &Path, name: &str, mut command: Command) -> Result<u32, ClientError> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{name}.log")))
        .map_err(|e| net_err(format!("opening {name}.log: {e}")))?;
    let bin = PathBuf::from(command.get_program());
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| net_err(e.to_string()))?)
        .stderr(log)
        .process_group(0);
    let child = command.spawn().map_err(|e| missing_binary(&bin, e))?;
    let pid = child.id();
    // The child is watched by pid (it may outlive this process with --detach).
    drop(child);
    std::fs::write(pid_file(dir, name), format!("{pid}\n"))
        .map_err(|e| net_err(format!("writing {name}.pid: {e}")))?;
    Ok(pid)
}

fn exited(dir: &Path, name: &str) -> ClientError {
    let log = dir.join(format!("{name}.log"));
    let tail = std::fs::read_to_string(&log)
        .map(|t| {
            let lines: Vec<&str> = t.lines().collect();
            lines[lines.len().saturating_sub(5)..].join("\n  ")
        })
        .unwrap_or_default();
    let pid = std::fs::read_to_string(pid_file(dir, name)).unwrap_or_default();
    let state = pid
        .trim()
        .parse()
        .ok()
        .and_then(proc_state)
        .unwrap_or_else(|| "gone".into());
    net_err(format!(
        "{name} (pid {}, state {state}) stopped while starting; its log {} ends:\n  {tail}",
        pid.trim(),
        log.display()
    ))
}

/// Polls `ready` until it gives a value, while process `name` runs, for at most `timeout`.
async fn wait_until<T, F, Fut>(
    dir: &Path,
    name: &str,
    timeout: Duration,
    mut ready: F,
) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    // A process just spawned may not have finished exec yet (its command line is still
    // ours): it counts as stopped only when missing on several checks in a row.
    let mut missing = 0;
    loop {
        if let Some(value) = ready().await {
            return Ok(value);
        }
        if running_pid(dir, name, program_of(name)).is_none() {
            missing += 1;
            if missing >= 4 {
                return Err(exited(dir, name));
            }
        } else {
            missing = 0;
        }
        if Instant::now() > deadline {
            return Err(net_err(format!(
                "{name} did not become ready within {} s; see {}",
                timeout.as_secs(),
                dir.join(format!("{name}.log")).display()
            )));
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

fn read_root(layout: &Layout) -> Result<Vec<u8>, ClientError> {
    let text = std::fs::read_to_string(layout.ca_root())
        .map_err(|e| net_err(format!("{}: {e}", layout.ca_root().display())))?;
    pem_decode(&text, "CERTIFICATE").map_err(|e| net_err(e.to_string()))
}

/// The local network's second admin (wallet `wallets/admin2`): with `admin`, the two whose
/// approvals change the configuration.
pub const SECOND_ADMIN: &str = "admin2";

/// The local network's auditor (wallet `wallets/auditor`): one of the ledger's readers, who
/// may read its blocks (`ledger verify`, `ledger blocks`, `ledger proof`), which no
/// administrator, clinician, patient or researcher may (issue 20 item 1).
pub const AUDITOR: &str = "auditor";

/// Registers `name` with `role` (if its wallet does not exist yet) and enrolls it into
/// `D/wallets/name`.
pub async fn ensure_identity(
    layout: &Layout,
    admin: &Wallet,
    name: &str,
    role: &str,
    attributes: Vec<v1::Attribute>,
) -> Result<Wallet, ClientError> {
    let dir = layout.wallets().join(name);
    if dir.join("cert.pem").exists() {
        let wallet = Wallet::open(&dir)?;
        pin(layout, &wallet)?;
        return Ok(wallet);
    }
    let root = read_root(layout)?;
    let mut ca = CaClient::connect(&layout.ca_url(), &root, TlsIdentity::Wallet(admin)).await?;
    let registered = ca
        .register(v1::RegisterRequest {
            name: name.to_string(),
            role: role.to_string(),
            attributes,
            max_enrollments: 1,
        })
        .await?;
    let wallet =
        medledger_sdk::enroll(&layout.ca_url(), &root, name, &registered.secret, &dir).await?;
    pin(layout, &wallet)?;
    Ok(wallet)
}

/// Renews, keeping both keys, every wallet of the network whose certificate is in its
/// renewal window ([`Wallet::renewal_due`]): `network up` keeps the certificates of an idle
/// local network current (issue 19 item 2). Running peers and the gateway renew their own
/// (and take one renewed here for the same key). Returns the names renewed.
pub async fn renew_due_wallets(layout: &Layout) -> Result<Vec<String>, ClientError> {
    let mut renewed = Vec::new();
    let Ok(entries) = std::fs::read_dir(layout.wallets()) else {
        return Ok(renewed);
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    dirs.sort();
    for dir in dirs {
        if !dir.join("cert.pem").exists() {
            continue;
        }
        // One wallet that cannot be renewed (revoked, damaged) stops nothing else.
        match open_current(&dir, Some(&layout.ca_url())).await {
            Ok((wallet, true)) => renewed.push(wallet.info.name),
            Ok((_, false)) => {}
            Err(e) => eprintln!("not renewing {}: {e}", dir.display()),
        }
    }
    Ok(renewed)
}

/// The wallet in `dir`, its certificate renewed first (both keys kept,
/// [`medledger_sdk::renewal::renew_wallet_if_due`]) when it is due: what every command of the
/// local network acts with, so that one started late in a certificate's life, or after a
/// long step such as adding a peer, does not present a certificate that ends on the way.
/// The CA is `ca_url`, else the one the wallet names. Returns the wallet and whether it was
/// renewed; a renewal that fails is reported on stderr and the wallet is returned as it is
/// (the command then fails where it is refused).
///
/// # Errors
/// The wallet cannot be read.
pub async fn open_current(dir: &Path, ca_url: Option<&str>) -> Result<(Wallet, bool), ClientError> {
    let mut wallet = Wallet::open(dir)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    match medledger_sdk::renewal::renew_wallet_if_due(&mut wallet, ca_url, now).await {
        Ok(true) => {
            eprintln!(
                "renewed the certificate of {} (it was due; same keys)",
                wallet.info.name
            );
            Ok((wallet, true))
        }
        Ok(false) => {
            // Lapsed: no renewal is possible, and the command's refusal would not say why.
            if let Ok(identity) = wallet.certificate_identity()
                && identity.not_after < now
            {
                eprintln!(
                    "the certificate of {} expired {} s ago and cannot be renewed; ask an \
                     administrator to register the identity again",
                    wallet.info.name,
                    now.saturating_sub(identity.not_after)
                );
            }
            Ok((wallet, false))
        }
        Err(e) => {
            eprintln!(
                "the certificate of {} is due for renewal, which failed ({e}); going on with it",
                wallet.info.name
            );
            Ok((wallet, false))
        }
    }
}

/// Pins `wallet` to this network once its genesis block exists (the peers' own wallets are
/// made before it and need no pin: a peer is given the genesis).
fn pin(layout: &Layout, wallet: &Wallet) -> Result<(), ClientError> {
    if !layout.genesis().exists() {
        return Ok(());
    }
    let genesis = medledger_sdk::peer::read_genesis_file(&layout.genesis())?;
    medledger_sdk::peer::pin_network(wallet, genesis).map(|_| ())
}

/// Brings the network up (see the module doc). Returns its layout.
pub async fn up(opts: &UpOptions) -> Result<Layout, ClientError> {
    let count = opts.peers.unwrap_or(4);
    if count < 4 {
        return Err(ClientError::Usage(format!(
            "--peers {count}: PBFT needs at least 4 peers to tolerate one fault (f faults \
             need 3f + 1: 4, 7, 10, ...)"
        )));
    }
    let peer_ports = opts.peer_port..opts.peer_port + count as u16;
    let gateway_port: u16 = opts
        .gateway_listen
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| ClientError::Usage("--gateway-listen must be HOST:PORT".into()))?;
    if peer_ports.contains(&gateway_port) {
        return Err(ClientError::Usage(format!(
            "the peers use ports {}..{}; give the gateway another port (--gateway-listen)",
            peer_ports.start,
            peer_ports.end - 1
        )));
    }
    create_private_dir(&opts.dir)?;
    let dir = std::fs::canonicalize(&opts.dir).map_err(|e| net_err(e.to_string()))?;
    let opts = &UpOptions {
        dir: dir.clone(),
        ..opts.clone()
    };
    let layout = match Layout::read(&dir) {
        Ok(existing) => {
            if let Some(asked) = opts.peers
                && asked != existing.peers.len()
            {
                return Err(ClientError::Usage(format!(
                    "the network in {} has {} peers; change them with `medledger network \
                     add-peer` and `remove-peer`, or use another --dir for a new network of {asked}",
                    dir.display(),
                    existing.peers.len(),
                )));
            }
            Layout {
                store: opts.store.clone().unwrap_or(existing.store.clone()),
                ..existing
            }
        }
        Err(_) => Layout {
            dir: dir.clone(),
            ca_listen: opts.ca_listen.clone(),
            peers: peer_ports.map(|p| format!("127.0.0.1:{p}")).collect(),
            peer_names: Vec::new(),
            gateway_listen: opts.gateway_listen.clone(),
            store: opts.store.clone().unwrap_or(StoreLayout::Local {
                dir: dir.join("objects"),
            }),
        },
    };
    layout.write()?;
    let bins = Binaries {
        dir: opts.bin_dir.clone(),
    };

    // The CA: created once, started if not running.
    if !layout.ca_root().exists() {
        run_tool(bins.ca_init(&dir.join("ca")))?;
    }
    if running_pid(&dir, "ca", "medledger-ca").is_none() {
        spawn(
            &dir,
            "ca",
            bins.ca_serve(&dir.join("ca"), &layout.ca_listen),
        )?;
    }
    let root = read_root(&layout)?;
    wait_until(&dir, "ca", Duration::from_secs(30), || async {
        let mut ca = CaClient::connect(&layout.ca_url(), &root, TlsIdentity::Anonymous)
            .await
            .ok()?;
        ca.ca_info().await.ok().map(|_| ())
    })
    .await?;

    // The administrator, the peers' identities and the genesis block: once.
    let admin_dir = layout.admin_wallet();
    if !admin_dir.join("cert.pem").exists() {
        let secret = std::fs::read_to_string(dir.join("ca/admin.secret"))
            .map_err(|e| net_err(format!("the CA's admin secret: {e}")))?;
        medledger_sdk::enroll(&layout.ca_url(), &root, "admin", secret.trim(), &admin_dir).await?;
    }
    let admin = Wallet::open(&admin_dir)?;
    renew_due_wallets(&layout).await?;
    let admin = Wallet::open(&admin_dir).unwrap_or(admin);
    if !layout.genesis().exists() {
        let mut peers = Vec::new();
        for (i, address) in layout.peers.iter().enumerate() {
            let name = layout.peer_name(i);
            let wallet = ensure_identity(&layout, &admin, &name, "peer", Vec::new()).await?;
            peers.push(GenesisPeer {
                name,
                certificate: wallet.dir.join("cert.pem"),
                address: address.clone(),
            });
        }
        // Configuration changes need two admins (docs/adr/0010): the bootstrap admin and a
        // second, each its own identity.
        let second = ensure_identity(&layout, &admin, SECOND_ADMIN, "admin", Vec::new()).await?;
        // The auditor who, with the peers, reads the blocks (`ledger verify`): named by the
        // genesis, as only a configuration makes a reader (issue 20 item 1).
        let auditor = ensure_identity(&layout, &admin, AUDITOR, "auditor", Vec::new()).await?;
        let mut parameters = vec![
            "--admin".to_string(),
            admin_dir.join("cert.pem").display().to_string(),
            "--admin".to_string(),
            second.dir.join("cert.pem").display().to_string(),
            "--auditor".to_string(),
            auditor.dir.join("cert.pem").display().to_string(),
        ];
        parameters.extend(opts.genesis_args.iter().cloned());
        run_tool(bins.genesis(&layout.ca_root(), &peers, &parameters, &layout.genesis()))?;
    }
    pin(&layout, &admin)?;
    for enrolled_before in [SECOND_ADMIN, AUDITOR] {
        if let Ok(wallet) = Wallet::open(&layout.wallets().join(enrolled_before)) {
            pin(&layout, &wallet)?;
        }
    }
    ensure_identity(&layout, &admin, "gateway", "gateway", Vec::new()).await?;
    ensure_identity(&layout, &admin, AUDITOR, "auditor", Vec::new()).await?;

    // The peers: started, then linked to each other.
    for (i, address) in layout.peers.iter().enumerate() {
        let name = layout.peer_name(i);
        if running_pid(&dir, &name, "medledger-peer").is_none() {
            // Another peer to join through: a member ignores it, a peer whose join was
            // interrupted (its catch-up or its head confirmation) finishes it.
            let via = (0..layout.peers.len())
                .find(|j| *j != i)
                .map(|j| layout.join_argument(j));
            start_peer(&layout, &bins, &name, address, via.as_deref())?;
        }
    }
    let peers = wait_until(
        &dir,
        &layout.peer_name(0),
        Duration::from_secs(60),
        || async { PeerSet::connect(&admin, layout.first_peer()).await.ok() },
    )
    .await?;
    let in_force = peers.configuration();
    let layout = follow_configuration(layout, &in_force.peers, in_force.sequence, &bins).await?;
    // Each peer by its name among the peers in force (a client that has not followed every
    // configuration link yet knows other peers at those ids).
    for name in layout.peer_names() {
        wait_linked(&layout, &admin, &name, Duration::from_secs(60)).await?;
    }

    // The gateway.
    if running_pid(&dir, "gateway", "medledger-gateway").is_none() {
        let command = bins.gateway_serve(
            &layout.wallets().join("gateway"),
            layout.first_peer(),
            &layout.gateway_listen,
            &dir.join("gateway"),
            &layout.store.gateway_args(),
        );
        spawn(&dir, "gateway", command)?;
    }
    wait_until(&dir, "gateway", Duration::from_secs(30), || async {
        medledger_sdk::files::connect_gateway(&admin, &layout.gateway_listen, peers.revocations())
            .await
            .ok()
            .map(|_| ())
    })
    .await?;
    Ok(layout)
}

/// `layout` brought in line with `in_force`, the peers of the configuration in force
/// (number `sequence`): a command that failed (or was killed) after its configuration change
/// committed left `network.json` behind the chain. Peers the configuration names and the
/// layout lacks are taken in, in the configuration's order, and started (through another
/// peer, `--join`) when their wallet is here. Peers the layout names and the configuration
/// does not are kept and only reported: the configuration learned may be behind (a peer
/// that lags or withholds links proves an old configuration as well as a new one), so
/// nothing is stopped on its word; `network remove-peer` removes. Writes and returns the
/// layout; says on stderr what changed.
///
/// # Errors
/// `network.json` cannot be written, or a peer cannot be started.
async fn follow_configuration(
    layout: Layout,
    in_force: &[v1::GenesisPeer],
    sequence: u64,
    bins: &Binaries,
) -> Result<Layout, ClientError> {
    let known = layout.peer_names();
    let added: Vec<(String, String)> = in_force
        .iter()
        .filter(|p| !known.contains(&p.name))
        .map(|p| (p.name.clone(), p.address.clone()))
        .collect();
    let unnamed: Vec<String> = known
        .iter()
        .filter(|n| !in_force.iter().any(|p| p.name == **n))
        .cloned()
        .collect();
    if !unnamed.is_empty() {
        eprintln!(
            "network.json names {} and the configuration learned ({sequence}) does not: kept \
             (remove a peer with `medledger network remove-peer`)",
            unnamed.join(", ")
        );
    }
    if added.is_empty() {
        return Ok(layout);
    }
    let mut followed = layout;
    let mut names = followed.peer_names();
    for (name, address) in &added {
        names.push(name.clone());
        followed.peers.push(address.clone());
    }
    followed.peer_names = names;
    followed.write()?;
    eprintln!(
        "network.json followed the configuration in force ({sequence}): {} added",
        added
            .iter()
            .map(|(name, _)| name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    for (name, address) in &added {
        let here = followed.wallets().join(name).join("cert.pem").exists();
        if here && running_pid(&followed.dir, name, "medledger-peer").is_none() {
            let via = (0..followed.peers.len())
                .find(|j| followed.peers[*j] != *address)
                .map(|j| followed.join_argument(j));
            start_peer(&followed, bins, name, address, via.as_deref())?;
        } else if !here {
            eprintln!("{name} at {address} is not one of this machine's peers; not started here");
        }
    }
    Ok(followed)
}

/// Starts peer `name` of `layout` (its wallet, data directory, log and pid file by that
/// name) in the background; it listens at its address in the configuration in force, its
/// metrics at that port + 100. `join`: a peer to catch up from, for a peer the admins are
/// adding (`medledger-peer serve --join`). Returns its pid.
///
/// # Errors
/// The binary cannot be run, or its log or pid file cannot be written.
pub fn start_peer(
    layout: &Layout,
    bins: &Binaries,
    name: &str,
    address: &str,
    join: Option<&str>,
) -> Result<u32, ClientError> {
    let mut command = bins.peer_serve(
        &layout.wallets().join(name),
        &layout.genesis(),
        &layout.dir.join(name),
    );
    if let Some(source) = join {
        command.args(["--join", source]);
    }
    if let Some(metrics) = port_of(address).and_then(|p| p.checked_add(100)) {
        command.env(
            "MEDLEDGER_PEER_METRICS_LISTEN",
            format!("127.0.0.1:{metrics}"),
        );
    }
    spawn(&layout.dir, name, command)
}

fn port_of(address: &str) -> Option<u16> {
    address.rsplit(':').next()?.parse().ok()
}

/// The name and loopback address the next peer added to `layout` gets: the first
/// `peerK` no wallet of the network has yet (a removed peer's name is not reused), and the
/// first free port after the highest peer port that no other part of the network uses
/// (the CA, the gateway, the peers' metrics).
///
/// # Errors
/// No free port is left below 65,435.
pub fn next_peer(layout: &Layout) -> Result<(String, String), ClientError> {
    let names = layout.peer_names();
    let name = (0..)
        .map(|k| format!("peer{k}"))
        .find(|n| !names.contains(n) && !layout.wallets().join(n).exists())
        .unwrap_or_default();
    let ports: Vec<u16> = layout.peers.iter().filter_map(|a| port_of(a)).collect();
    let taken = |p: u16| {
        ports.contains(&p)
            || ports.iter().any(|q| q.checked_add(100) == Some(p))
            || Some(p) == port_of(&layout.ca_listen)
            || Some(p) == port_of(&layout.gateway_listen)
    };
    let first = ports
        .iter()
        .max()
        .copied()
        .unwrap_or(7060)
        .saturating_add(1);
    let port = (first..u16::MAX - 100)
        .find(|&p| {
            !taken(p)
                && !taken(p + 100)
                && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
                && std::net::TcpListener::bind(("127.0.0.1", p + 100)).is_ok()
        })
        .ok_or_else(|| net_err("no free port left for another peer"))?;
    Ok((name, format!("127.0.0.1:{port}")))
}

/// Waits (at most `timeout`) until peer `name` of the configuration `admin` follows from
/// `layout`'s peers answers and is linked to every other peer.
///
/// # Errors
/// It stopped, or was not linked in time (its log is named).
pub async fn wait_linked(
    layout: &Layout,
    admin: &Wallet,
    name: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let admin = CurrentWallet::new(admin.dir.clone());
    wait_until(&layout.dir, name, timeout, || async {
        let admin = admin.get().await.ok()?;
        for address in &layout.peers {
            let Ok(peers) = PeerSet::connect(&admin, address).await else {
                continue;
            };
            let index = peers.names().iter().position(|n| n == name)?;
            return linked(&peers, index).await.map(|_| ());
        }
        None
    })
    .await
}

/// As [`wait_linked`], and until peer `name` also takes part in consensus
/// ([`participation::Participation`]: caught up to within [`participation::MAX_LAG_BLOCKS`]
/// of the others, in their view, not suspecting the primary) and has for
/// [`SETTLED_CHECKS`] checks in a row, about 150 ms apart: what a peer just added or moved
/// must reach before the command that added it says so. (Just joined, a peer may take part
/// at one check and, its links from the primary still opening, suspect it at the next.)
///
/// # Errors
/// It stopped, or did not take part in time (its log is named).
pub async fn wait_taking_part(
    layout: &Layout,
    admin: &Wallet,
    name: &str,
    timeout: Duration,
) -> Result<(), ClientError> {
    let in_a_row = std::cell::Cell::new(0u32);
    let admin = CurrentWallet::new(admin.dir.clone());
    // The second admin idles through the wait, and the next change needs its approval: a
    // one-minute certificate would lapse meanwhile, and a lapsed one cannot be renewed.
    let second = CurrentWallet::new(layout.wallets().join(SECOND_ADMIN));
    wait_until(&layout.dir, name, timeout, || async {
        if second.dir.join("cert.pem").exists() {
            let _ = second.get().await;
        }
        let Ok(admin) = admin.get().await else {
            in_a_row.set(0);
            return None;
        };
        let taking_part = async {
            for address in &layout.peers {
                let Ok(peers) = PeerSet::connect(&admin, address).await else {
                    continue;
                };
                let index = peers.names().iter().position(|n| n == name)?;
                linked(&peers, index).await?;
                let now = participation_of(&peers).await;
                return now.taking_part.iter().any(|p| p == name).then_some(());
            }
            None
        }
        .await;
        in_a_row.set(if taking_part.is_some() {
            in_a_row.get().saturating_add(1)
        } else {
            0
        });
        (in_a_row.get() >= SETTLED_CHECKS).then_some(())
    })
    .await
}

/// A wallet kept current through a wait that may outlast its certificate (a peer catching
/// up under load takes longer than a one-minute certificate has left): each use opens it
/// again, renewed when due ([`open_current`], tried at most every [`RENEW_TRY_EVERY`]).
struct CurrentWallet {
    dir: PathBuf,
    last_try: std::cell::Cell<Option<Instant>>,
}

/// Pause between renewal attempts of a [`CurrentWallet`] (a CA that is down is not asked
/// again at every poll).
const RENEW_TRY_EVERY: Duration = Duration::from_secs(5);

impl CurrentWallet {
    fn new(dir: PathBuf) -> CurrentWallet {
        CurrentWallet {
            dir,
            last_try: std::cell::Cell::new(None),
        }
    }

    /// The wallet as it is now in its directory, renewed first when due.
    ///
    /// # Errors
    /// The wallet cannot be read (the wait polls again).
    async fn get(&self) -> Result<Wallet, ClientError> {
        let due = self
            .last_try
            .get()
            .is_none_or(|at| at.elapsed() >= RENEW_TRY_EVERY);
        if due {
            self.last_try.set(Some(Instant::now()));
            return open_current(&self.dir, None)
                .await
                .map(|(wallet, _)| wallet);
        }
        Wallet::open(&self.dir)
    }
}

/// Checks in a row a peer just added must take part in ([`wait_taking_part`]).
pub const SETTLED_CHECKS: u32 = 5;

/// Which peers take part in consensus now and how many more may fail
/// ([`participation::Participation`]), from each peer's own `GetStatus` (2 s each).
pub async fn participation(layout: &Layout) -> participation::Participation {
    let names = layout.peer_names();
    let mut peers = None;
    if let Ok(admin) = Wallet::open(&layout.admin_wallet()) {
        for address in &layout.peers {
            if let Ok(set) = PeerSet::connect(&admin, address).await {
                peers = Some(set);
                break;
            }
        }
    }
    let Some(peers) = peers else {
        return participation::Participation::judge(&names, &vec![None; names.len()], 0);
    };
    participation_of(&peers).await
}

/// [`participation`] through connections already open to every peer of the network.
pub async fn participation_of(peers: &PeerSet) -> participation::Participation {
    let names = peers.names();
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..peers.n() {
        let mut client = peers.peer(i);
        calls.spawn(async move {
            let answer = tokio::time::timeout(
                Duration::from_secs(2),
                client.get_status(v1::GetStatusRequest {}),
            )
            .await;
            (i, answer.ok().and_then(Result::ok).map(|r| r.into_inner()))
        });
    }
    let mut statuses = vec![None; peers.n()];
    while let Some(Ok((i, status))) = calls.join_next().await {
        statuses[i] = status;
    }
    let skew = peers.configuration().parameters.max_clock_skew_ms;
    participation::Participation::judge(&names, &statuses, skew)
}

/// Peer `index`'s status if it answers and is linked to every other peer.
async fn linked(peers: &PeerSet, index: usize) -> Option<v1::GetStatusResponse> {
    let status = peers
        .peer(index)
        .get_status(v1::GetStatusRequest {})
        .await
        .ok()?
        .into_inner();
    status.peers.iter().all(|p| p.connected).then_some(status)
}

fn create_private_dir(dir: &Path) -> Result<(), ClientError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| net_err(format!("creating {}: {e}", dir.display())))
}

fn component_names(layout: &Layout) -> Vec<(String, String)> {
    let mut names = vec![("ca".to_string(), layout.ca_url())];
    for (name, address) in layout.peer_names().into_iter().zip(&layout.peers) {
        names.push((name, address.clone()));
    }
    names.push(("gateway".into(), layout.gateway_listen.clone()));
    names
}

/// What runs, and how each part answers.
pub async fn status(layout: &Layout) -> Vec<Component> {
    let admin = Wallet::open(&layout.admin_wallet()).ok();
    // One connection set for every peer, through the first that answers.
    let mut peers = None;
    if let Some(admin) = &admin {
        for address in &layout.peers {
            if let Ok(set) = PeerSet::connect(admin, address).await {
                peers = Some(set);
                break;
            }
        }
    }
    let mut out = Vec::new();
    for (name, address) in component_names(layout) {
        let pid = running_pid(&layout.dir, &name, program_of(&name));
        let detail = match (pid, &admin) {
            (None, _) => last_fatal(&layout.dir.join(format!("{name}.log")), program_of(&name))
                .unwrap_or_default(),
            (_, None) => String::new(),
            (Some(_), Some(admin)) => {
                if layout.peer_names().contains(&name) {
                    // By its name among the peers in force the client follows.
                    let index = peers
                        .as_ref()
                        .and_then(|p| p.names().iter().position(|n| *n == name));
                    let status = match (&peers, index) {
                        (Some(peers), Some(i)) => linked(peers, i).await,
                        _ => None,
                    };
                    match status {
                        Some(s) => format!(
                            "height {}, view {}, links {n}/{n}",
                            s.height,
                            s.view,
                            n = s.peers.len()
                        ),
                        None => "not linked to every other peer".into(),
                    }
                } else if name == "gateway" {
                    match medledger_sdk::files::connect_gateway(
                        admin,
                        &address,
                        &medledger_sdk::peer::SharedRevocations::default(),
                    )
                    .await
                    {
                        Ok(_) => format!("serving; objects in {}", describe(&layout.store)),
                        Err(e) => format!("not answering: {e}"),
                    }
                } else {
                    "serving".into()
                }
            }
        };
        out.push(Component {
            name,
            address,
            pid,
            running: pid.is_some(),
            detail,
        });
    }
    out
}

/// Why `program` stopped, from its log: its own last `PROGRAM: fatal: why` line (what the
/// process prints to stderr as it exits; a line merely containing those words, such as a
/// peer's or an object store's error text in another log line, does not count) since it
/// last logged that it was starting, from the log's last 64 KiB; at most 200 characters.
fn last_fatal(log: &Path, program: &str) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(log).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(64 << 10)))
        .ok()?;
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).ok()?;
    let tail = String::from_utf8_lossy(&tail);
    let prefix = format!("{program}: ");
    let line = tail
        .lines()
        .rev()
        .take_while(|l| !l.contains(" starting"))
        .find(|l| l.starts_with(&prefix) && l[prefix.len()..].starts_with("fatal: "))?;
    Some(line[prefix.len()..].chars().take(200).collect())
}

pub fn describe(store: &StoreLayout) -> String {
    match store {
        StoreLayout::Local { dir } => dir.display().to_string(),
        StoreLayout::S3 {
            endpoint, bucket, ..
        } => format!("s3 {endpoint} bucket {bucket}"),
    }
}

/// Stops every process of the network (gateway first, CA last); state stays on disk.
/// Returns the names stopped.
pub async fn down(layout: &Layout) -> Vec<String> {
    let mut names: Vec<String> = component_names(layout)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    names.reverse();
    stop(&layout.dir, names).await
}

/// Stops the processes `names` of the network in `dir` (SIGTERM; SIGKILL after 15 s);
/// returns the names of those that ran and stopped.
pub async fn stop(dir: &Path, names: Vec<String>) -> Vec<String> {
    let mut stopped = Vec::new();
    let mut waiting: BTreeMap<String, u32> = BTreeMap::new();
    for name in names {
        if let Some(pid) = running_pid(dir, &name, program_of(&name)) {
            if let Some(p) = rustix::process::Pid::from_raw(pid as i32) {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::TERM);
            }
            waiting.insert(name, pid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while !waiting.is_empty() {
        waiting.retain(|name, pid| {
            if running_pid(dir, name, program_of(name)).is_none() {
                stopped.push(name.clone());
                let _ = std::fs::remove_file(pid_file(dir, name));
                return false;
            }
            if Instant::now() > deadline
                && let Some(p) = rustix::process::Pid::from_raw(*pid as i32)
            {
                let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
            }
            true
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stopped
}

/// Whether any part has stopped (for `network up` in the foreground).
pub fn any_stopped(layout: &Layout) -> Option<String> {
    component_names(layout)
        .into_iter()
        .map(|(name, _)| name)
        .find(|name| running_pid(&layout.dir, name, program_of(name)).is_none())
}
