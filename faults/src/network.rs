//! A real network for one episode: the CA on the host's loopback, `n` peers each in its own
//! namespace of a [`Fabric`] (listening on its namespace's address, not on 127.0.0.1), from
//! one genesis that names those addresses; and what the harness does to the processes:
//! kill -9 and restart, pause (SIGSTOP) and resume.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use medledger_devnet::process::{Binaries, GenesisPeer, Process};
use medledger_devnet::{Layout, StoreLayout, ensure_identity};
use medledger_proto::v1;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::wallet::Wallet;

use crate::disk::Disk;
use crate::files::{Damage, Files, ObjectsArg};
use crate::netns::Fabric;

/// The port every peer listens on, in its own namespace.
pub const PEER_PORT: u16 = 7051;

/// How long a peer started on a damaged table may run before its background scrub must
/// have found the damage and stopped it.
const SCRUB_BOUND: Duration = Duration::from_secs(60);

/// The file that fills a peer's disk.
const FILLER: &str = "disk-filler";

/// One peer process, attached; `None` while killed.
pub struct Peer {
    process: Option<Process>,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// The offset (ms) the peer adds to its wall clock (`MEDLEDGER_FAULT_CLOCK_FILE`, debug
    /// builds), read at most once a second.
    pub clock_file: PathBuf,
    /// The other peers (`NAME@HOST:PORT`, comma-separated) it catches up from, given with
    /// `--join` at every start once its key was rotated ([`Network::rekey`]): its ledger
    /// names it by its old key until it reaches the change.
    pub join: Option<String>,
}

impl Peer {
    pub fn is_running(&self) -> bool {
        self.process.is_some()
    }

    fn signal(&mut self, signal: rustix::process::Signal) {
        if let Some(pid) = self
            .process
            .as_ref()
            .and_then(|p| rustix::process::Pid::from_raw(p.id() as i32))
        {
            let _ = rustix::process::kill_process(pid, signal);
        }
    }
}

/// What one peer reports of itself (`GetStatus`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Standing {
    pub height: u64,
    pub head: Vec<u8>,
    pub view: u64,
    pub primary: u32,
}

pub struct Network {
    pub fabric: Fabric,
    pub layout: Layout,
    bins: Binaries,
    _ca: Process,
    pub peers: Vec<Peer>,
    pub admin: Wallet,
    /// Each peer's disk (its data directory), by peer.
    disks: Vec<Disk>,
    /// The object store and the gateway, when the episode moves files.
    pub files: Option<Files>,
    /// `MEDLEDGER_FAULT_LIE` for every peer (`NAME:KIND+KIND…`: the peer so named lies to
    /// everyone who asks it; debug builds, `peer/src/lies.rs`).
    pub lie: Option<String>,
    /// The ledger file a corrupt fault damaged, until the heal.
    pub damaged: Option<PathBuf>,
    /// The CA as the peers reach it from their namespaces (for their revocation feed).
    peer_ca_url: String,
}

impl Network {
    /// Starts the CA, enrolls the admins and the peers' identities, writes a genesis naming
    /// the namespaces' addresses and starts every peer in its namespace, under `dir`.
    ///
    /// # Errors
    /// Any step failed: the message says which.
    pub async fn start(
        dir: &Path,
        bin_dir: &Path,
        n: usize,
        run_hint: u32,
        objects: ObjectsArg,
        lie: Option<String>,
    ) -> anyhow::Result<Network> {
        let fabric = Fabric::create(run_hint, n)?;
        let fabric_host = fabric.host_address();
        let bins = Binaries {
            dir: bin_dir.to_path_buf(),
        };
        std::fs::create_dir_all(dir)?;
        let ca_dir = dir.join("ca");
        // The peers reach the CA over the bridge (their revocation feed): its certificate
        // names the bridge's host address, and it listens there as well as on loopback.
        let output = bins
            .ca_init(&ca_dir)
            .args(["--host", &fabric.host_address()])
            .output()
            .context("medledger-ca init")?;
        if !output.status.success() {
            bail!(
                "medledger-ca init: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let mut ca_command = bins.ca_serve(&ca_dir, "0.0.0.0:0");
        ca_command.env("RUST_LOG", "warn");
        let ca = Process::start(
            ca_command,
            &dir.join("ca.log"),
            "medledger-ca listening on https://",
        )
        .map_err(anyhow::Error::msg)?;
        let port = ca
            .first_line
            .rsplit(':')
            .next()
            .context("the CA names its port")?
            .to_string();
        let layout = Layout {
            dir: dir.to_path_buf(),
            ca_listen: format!("127.0.0.1:{port}"),
            peers: (0..n)
                .map(|i| format!("{}:{PEER_PORT}", fabric.address(i)))
                .collect(),
            peer_names: Vec::new(),
            gateway_listen: "127.0.0.1:0".into(),
            store: StoreLayout::Local {
                dir: dir.join("objects"),
            },
        };
        let root = std::fs::read_to_string(layout.ca_root()).context("the CA root")?;
        let root =
            medledger_sdk::wallet::pem_decode(&root, "CERTIFICATE").map_err(anyhow::Error::msg)?;
        let secret =
            std::fs::read_to_string(ca_dir.join("admin.secret")).context("admin secret")?;
        let admin_dir = layout.admin_wallet();
        medledger_sdk::enroll(&layout.ca_url(), &root, "admin", secret.trim(), &admin_dir).await?;
        let admin = Wallet::open(&admin_dir)?;
        let mut specs = Vec::new();
        for (i, address) in layout.peers.iter().enumerate() {
            let name = format!("peer{i}");
            let wallet = ensure_identity(&layout, &admin, &name, "peer", Vec::new()).await?;
            specs.push(GenesisPeer {
                name,
                certificate: wallet.dir.join("cert.pem"),
                address: address.clone(),
            });
        }
        let second = ensure_identity(&layout, &admin, "admin2", "admin", Vec::new()).await?;
        let parameters: Vec<String> = [
            "--request-timeout-ms",
            "1500",
            // Short, so that the gateway's journal settles an upload whose transaction never
            // committed within a minute of the fault, before the checker looks at the store.
            "--max-tx-lifetime-ms",
            "60000",
            "--admin",
            &admin_dir.join("cert.pem").display().to_string(),
            "--admin",
            &second.dir.join("cert.pem").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let output = bins
            .genesis(&layout.ca_root(), &specs, &parameters, &layout.genesis())
            .output()
            .context("medledger-peer genesis")?;
        if !output.status.success() {
            bail!("genesis: {}", String::from_utf8_lossy(&output.stderr));
        }
        let genesis = medledger_sdk::peer::read_genesis_file(&layout.genesis())?;
        medledger_sdk::peer::pin_network(&admin, genesis)?;
        let peers = (0..n)
            .map(|i| Peer {
                process: None,
                data_dir: dir.join(format!("peer{i}")),
                log: dir.join(format!("peer{i}.log")),
                clock_file: dir.join(format!("peer{i}.clock-offset-ms")),
                join: None,
            })
            .collect();
        let mut network = Network {
            fabric,
            layout,
            bins,
            _ca: ca,
            peers,
            admin,
            disks: Vec::new(),
            files: None,
            lie,
            damaged: None,
            peer_ca_url: format!("https://{}:{port}", fabric_host),
        };
        for i in 0..n {
            let name = format!("mlf{}-peer{i}", network.fabric.run);
            let disk = Disk::create(&network.peers[i].data_dir, &name)
                .with_context(|| format!("peer{i}'s disk"))?;
            network.disks.push(disk);
            network.set_clock(i, 0)?;
            network.restart(i)?;
        }
        if objects != ObjectsArg::None {
            network.files = Some(
                Files::start(dir, &network.layout, &network.admin, &network.bins, objects).await?,
            );
        }
        Ok(network)
    }

    /// Starts peer `i` (again) in its namespace and waits until it listens; a peer that
    /// stopped by itself is started again too.
    ///
    /// # Errors
    /// It did not start: its words and the end of its log.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        if self.peers[i].process.as_mut().is_some_and(|p| p.exited()) {
            self.peers[i].process = None;
        }
        if self.peers[i].is_running() {
            return Ok(());
        }
        let reference = self.bins.peer_serve(
            &self.layout.wallets().join(format!("peer{i}")),
            &self.layout.genesis(),
            &self.peers[i].data_dir,
        );
        let mut command = self
            .fabric
            .command_in(i, &self.bins.dir.join("medledger-peer"));
        command
            .args(reference.get_args())
            .env(
                "RUST_LOG",
                std::env::var("PEER_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env(
                medledger_peer::fault_clock::FAULT_CLOCK_FILE,
                &self.peers[i].clock_file,
            );
        command.env("MEDLEDGER_PEER_CA_URL", &self.peer_ca_url);
        if let Some(join) = &self.peers[i].join {
            command.args(["--join", join]);
        }
        if let Some(lie) = &self.lie {
            command.env("MEDLEDGER_FAULT_LIE", lie);
        }
        let process = Process::start(command, &self.peers[i].log, "medledger-peer listening on ")
            .map_err(|e| anyhow::anyhow!("peer{i}: {e}"))?;
        self.peers[i].process = Some(process);
        Ok(())
    }

    /// Moves peer `i`'s wall clock to `offset_s` seconds from the true time (0: true), within
    /// a second, while it runs: a skew, or a jump forwards or backwards.
    ///
    /// # Errors
    /// The clock file could not be written.
    pub fn set_clock(&self, i: usize, offset_s: i64) -> anyhow::Result<()> {
        let text = format!("{}\n", offset_s.saturating_mul(1000));
        std::fs::write(&self.peers[i].clock_file, text).context("the peer's clock file")
    }

    /// Whether peer `i` stopped by itself.
    pub fn stopped_by_itself(&mut self, i: usize) -> bool {
        self.peers[i].process.as_mut().is_some_and(|p| p.exited())
    }

    /// Fills the file system under peer `i`'s data directory (its own disk of
    /// [`crate::disk::DISK_BYTES`]) to the last block: zeros until the kernel says no space
    /// is left.
    ///
    /// # Errors
    /// `dd` could not be run.
    pub fn fill_disk(&self, i: usize) -> anyhow::Result<()> {
        let filler = self.peers[i].data_dir.join(FILLER);
        for (block, extra) in [("1M", None), ("4k", Some("oflag=append"))] {
            let mut dd = std::process::Command::new("dd");
            dd.arg("if=/dev/zero")
                .arg(format!("of={}", filler.display()))
                .arg(format!("bs={block}"))
                .stderr(std::process::Stdio::null());
            if let Some(extra) = extra {
                dd.args([extra, "conv=notrunc"]);
            }
            // dd ends when the disk is full: its failure is the point.
            let _ = dd.status().context("dd")?;
        }
        Ok(())
    }

    /// Flips one byte of peer `i`'s (stopped) ledger at `at_per_mille` of its length: of its
    /// newest RocksDB write-ahead log (the one RocksDB replays), or, with `table`, of its
    /// table files taken as one (a `.sst` file's data, index, filter, properties or footer),
    /// falling back to the log while it has none. Returns the file it damaged.
    ///
    /// # Errors
    /// The ledger has no log, or it could not be written.
    pub fn corrupt_ledger(
        &self,
        i: usize,
        at_per_mille: u32,
        table: bool,
    ) -> anyhow::Result<PathBuf> {
        let ledger = self.peers[i].data_dir.join("ledger");
        let files = |extension: &str| -> anyhow::Result<Vec<(PathBuf, usize)>> {
            let mut found: Vec<(PathBuf, usize)> = std::fs::read_dir(&ledger)
                .with_context(|| format!("reading {}", ledger.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == extension))
                .filter_map(|p| Some((p.clone(), std::fs::metadata(&p).ok()?.len() as usize)))
                .filter(|(_, len)| *len > 0)
                .collect();
            found.sort();
            Ok(found)
        };
        let mut tables = if table { files("sst")? } else { Vec::new() };
        if table && tables.is_empty() {
            // Everything is still in the log (the memtables fill at 64 MiB): flush them to
            // table files, as the peer would have by itself later.
            let genesis = medledger_peer::genesis::Genesis::read(&self.layout.genesis())?;
            medledger_peer::ledger::Ledger::open(&ledger, &genesis)
                .and_then(|opened| opened.flush())
                .with_context(|| format!("flushing {}", ledger.display()))?;
            tables = files("sst")?;
        }
        let (path, at) = if tables.is_empty() {
            if table {
                println!("  peer{i} has no table file yet: its write-ahead log is damaged instead");
            }
            let (log, len) = files("log")?
                .pop()
                .with_context(|| format!("no write-ahead log in {}", ledger.display()))?;
            (log, len * at_per_mille.min(999) as usize / 1000)
        } else {
            let total: usize = tables.iter().map(|(_, len)| len).sum();
            let mut at = total * at_per_mille.min(999) as usize / 1000;
            let mut pick = tables[0].clone();
            for (path, len) in tables {
                if at < len {
                    pick = (path, len);
                    break;
                }
                at -= len;
            }
            (pick.0, at.min(pick.1 - 1))
        };
        let mut bytes = std::fs::read(&path)?;
        if let Some(byte) = bytes.get_mut(at) {
            *byte ^= 0xff;
        }
        std::fs::write(&path, bytes)?;
        println!(
            "  peer{i}: byte {at} of {} flipped",
            path.file_name().unwrap_or_default().to_string_lossy()
        );
        Ok(path)
    }

    /// Starts peer `i` after its ledger was damaged ([`Network::corrupt_ledger`], which
    /// returned `damaged`): it must refuse to start, saying its ledger is corrupt; then, as
    /// its operator would, the ledger is moved aside and the peer started again, to catch up
    /// from the others. A peer may start only if RocksDB itself removed the damaged file as
    /// obsolete (a table already compacted away): nothing it reads was damaged.
    ///
    /// # Errors
    /// The peer started on its damaged ledger, or stopped without saying why, or did not
    /// start again.
    pub fn restart_corrupt(&mut self, i: usize, damaged: &Path) -> anyhow::Result<()> {
        let before = std::fs::metadata(&self.peers[i].log).map_or(0, |m| m.len() as usize);
        if self.restart(i).is_ok() {
            let table = damaged.extension().is_some_and(|e| e == "sst");
            if table && !damaged.exists() {
                println!("  peer{i}'s damaged table was obsolete: RocksDB removed it at opening");
                return Ok(());
            }
            // Damage opening does not read is the background scrub's to find, within
            // seconds on a ledger this small: the peer must then stop by itself.
            let started = std::time::Instant::now();
            while !self.stopped_by_itself(i) {
                if started.elapsed() > SCRUB_BOUND {
                    bail!(
                        "peer{i} started on its damaged ledger ({}) and still runs {} s later",
                        damaged.display(),
                        SCRUB_BOUND.as_secs()
                    );
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            println!(
                "  peer{i} started, and its scrub found the damage after {} ms",
                started.elapsed().as_millis()
            );
        }
        let log = std::fs::read(&self.peers[i].log).unwrap_or_default();
        let said = String::from_utf8_lossy(log.get(before..).unwrap_or_default()).into_owned();
        if !said.contains("this peer's ledger is corrupt") {
            bail!("peer{i} stopped on its damaged ledger without saying so: {said}");
        }
        self.peers[i].process = None;
        let ledger = self.peers[i].data_dir.join("ledger");
        let aside = (1..)
            .map(|k| ledger.with_file_name(format!("ledger.corrupt-{k}")))
            .find(|p| !p.exists())
            .context("no name to move the ledger aside to")?;
        std::fs::rename(&ledger, &aside)
            .with_context(|| format!("moving {} aside", ledger.display()))?;
        println!("  peer{i} refused its damaged ledger, saying so; moved aside, it catches up");
        self.restart(i)
    }

    /// Damages the object store, if the episode has one ([`Files::damage`]).
    ///
    /// # Errors
    /// The store could not be listed, read or written.
    pub async fn damage(&mut self, damage: Damage, pick: u64) -> anyhow::Result<()> {
        match self.files.as_mut() {
            Some(files) => files.damage(damage, pick).await,
            None => Ok(()),
        }
    }

    /// Throttles peer `i`'s disk to `bytes_per_s` and `iops` each way.
    ///
    /// # Errors
    /// The peer does not run, or the throttle could not be set.
    pub fn slow_disk(&mut self, i: usize, bytes_per_s: u64, iops: u64) -> anyhow::Result<()> {
        let pid = self.peers[i]
            .process
            .as_ref()
            .map(Process::id)
            .with_context(|| format!("peer{i} does not run"))?;
        self.disks[i].slow(pid, bytes_per_s, iops)
    }

    /// Peer `i`'s disk at full speed again; the bytes of block I/O it did while slowed, if it
    /// was.
    pub fn unslow_disk(&mut self, i: usize) -> Option<u64> {
        self.disks.get_mut(i).and_then(Disk::unslow)
    }

    /// Gives peer `i`'s disk its space back.
    pub fn free_disk(&self, i: usize) {
        let _ = std::fs::remove_file(self.peers[i].data_dir.join(FILLER));
    }

    /// SIGKILL, as a crash or a power cut would.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut process) = self.peers[i].process.take() {
            process.kill();
        }
    }

    /// SIGSTOP: the process holds its sockets and answers nothing.
    pub fn pause(&mut self, i: usize) {
        self.peers[i].signal(rustix::process::Signal::STOP);
    }

    /// SIGCONT.
    pub fn resume(&mut self, i: usize) {
        self.peers[i].signal(rustix::process::Signal::CONT);
    }

    /// SIGTERM to every running peer (resumed first), and waits for each to exit.
    pub fn stop_all(&mut self) {
        for i in 0..self.peers.len() {
            self.resume(i);
            if let Some(process) = self.peers[i].process.take() {
                process.terminate();
            }
        }
    }

    /// Rotates peer `i`'s signing key as its operator would (`medledger network
    /// rekey-peer`): kills it, renews its certificate for a new key (the CA revokes the old
    /// one as superseded), and has both admins order, through another peer, the
    /// configuration change that removes it and adds it back with the new key at the same
    /// address (it becomes the last replica). It is started again, with `--join`, at the
    /// heal.
    ///
    /// # Errors
    /// The renewal or the change failed.
    pub async fn rekey(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(i);
        let name = format!("peer{i}");
        let second = Wallet::open(&self.layout.wallets().join("admin2"))?;
        let others: Vec<String> = (0..self.peers.len())
            .filter(|&k| k != i)
            .map(|k| self.layout.peers[k].clone())
            .collect();
        // From here on it starts with `--join`, also if the change fails below: its new key
        // is in no configuration until the change commits.
        let join: Vec<String> = (0..self.peers.len())
            .filter(|&k| k != i)
            .map(|k| self.layout.join_argument(k))
            .collect();
        self.peers[i].join = Some(join.join(","));
        let peers = PeerSet::connect(&self.admin, &others[0]).await?;
        let rekeyed = medledger_devnet::rekey::replace_peer_key(
            &self.layout,
            &name,
            &self.layout.peers[i],
            &peers,
            &[&self.admin, &second],
        )
        .await
        .with_context(|| format!("a new key for {name}, and the change that puts it in force"))?;
        println!(
            "  {name}'s new key is in force from block {}",
            rekeyed.block + 1
        );
        Ok(())
    }

    /// Every peer's standing, by process (peer `i` at `layout.peers[i]`, whatever its
    /// replica id now), asked of it alone within 2 s (`None`: no answer); its `primary` is
    /// the primary's process too (`u32::MAX`: a replica this client does not know).
    pub async fn standings(&self, client: &PeerSet) -> Vec<Option<Standing>> {
        let addresses = client.addresses();
        let process_of = |replica: usize| {
            addresses
                .get(replica)
                .and_then(|a| self.layout.peers.iter().position(|p| p == a))
        };
        let mut calls = tokio::task::JoinSet::new();
        for (replica, address) in addresses.iter().enumerate() {
            let Some(i) = self.layout.peers.iter().position(|p| p == address) else {
                continue;
            };
            let mut peer = client.peer(replica);
            calls.spawn(async move {
                let mut request = tonic::Request::new(v1::GetStatusRequest {});
                request.set_timeout(Duration::from_secs(2));
                let answer = tokio::time::timeout(Duration::from_secs(2), peer.get_status(request))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .map(|r| r.into_inner());
                (i, answer)
            });
        }
        let mut out = vec![None; self.peers.len()];
        while let Some(Ok((i, answer))) = calls.join_next().await {
            out[i] = answer.map(|s| Standing {
                height: s.height,
                head: s.last_block_hash,
                view: s.view,
                primary: process_of(s.primary as usize)
                    .and_then(|p| u32::try_from(p).ok())
                    .unwrap_or(u32::MAX),
            });
        }
        out
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for i in 0..self.peers.len() {
            self.resume(i);
            self.kill(i);
        }
        // The disks unmount as they drop, after the peers are gone.
        self.disks.clear();
    }
}
