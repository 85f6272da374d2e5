//! Clinical files under faults (issue 18): a real S3 server (Garage, started with
//! `deploy/garage`), the storage gateway as its own process (killed -9 mid-upload and
//! started again at the heal: its journal settles what was in flight), a patient uploading,
//! downloading and erasing through it, and an object store that loses, rolls back or alters
//! objects while a fault holds (put back at the heal, as from a replica or a backup).
//!
//! What must hold: no download ever yields other bytes than were uploaded; a damaged object
//! is refused as tampered and only damaged ones are; once healed and settled, `ledger
//! verify` finds every committed object in the store with its hash, erased records' objects
//! gone, and nothing the ledger does not reference (the checker runs it).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::StreamExt;
use medledger_devnet::garage::Garage;
use medledger_devnet::process::{Binaries, Process};
use medledger_devnet::{Layout, StoreLayout, ensure_identity};
use medledger_sdk::error::ClientError;
use medledger_sdk::files::{self, Destination, Reader};
use medledger_sdk::patient::RecordKeys;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::wallet::Wallet;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use prost::Message;
use rand::{Rng, SeedableRng};

use crate::workload::{History, INVOCATION_TIMEOUT, Invocation, Outcome, record, short};

const CATEGORY: &str = "lab-results";
/// Where the objects of patients' items live in the store.
const PREFIX: &str = "patients";
/// Longest the gateway's journal is waited for, once the clients stopped.
const SETTLE_BOUND: Duration = Duration::from_secs(120);

/// Where the objects go: `garage` (a real S3 server), `local` (a folder) or `none` (no file
/// traffic at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectsArg {
    Garage,
    Local,
    None,
}

/// The storage gateway, as its own process on the host's loopback; `None` while killed.
pub struct Gateway {
    bins: Binaries,
    wallet: PathBuf,
    peer: String,
    pub address: String,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    store_args: Vec<String>,
    process: Option<Process>,
}

impl Gateway {
    /// Starts it (again) and waits until it listens.
    ///
    /// # Errors
    /// It did not start: its words and the end of its log.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.process.as_mut().is_some_and(|p| p.exited()) {
            self.process = None;
        }
        if self.process.is_some() {
            return Ok(());
        }
        let mut command = self.bins.gateway_serve(
            &self.wallet,
            &self.peer,
            &self.address,
            &self.state_dir,
            &self.store_args,
        );
        command.env("RUST_LOG", "info");
        let process = Process::start(command, &self.log, "medledger-gateway listening on ")
            .map_err(|e| anyhow::anyhow!("the gateway: {e}"))?;
        self.process = Some(process);
        Ok(())
    }

    /// SIGKILL, whatever it is doing (mid-upload, mid-erasure).
    pub fn kill(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.kill();
        }
    }

    /// Uploads and erasures its journal still has to settle.
    pub fn unsettled(&self) -> usize {
        std::fs::read_dir(self.state_dir.join("journal")).map_or(0, |entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "pending"))
                .count()
        })
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.kill();
    }
}

/// How the object store misbehaves while a fault holds.
#[derive(Clone, Copy, Debug)]
pub enum Damage {
    /// `count` objects deleted.
    Lose { count: usize },
    /// One byte of each of `count` objects changed.
    Alter { count: usize },
    /// Every object written since the cycle began deleted: the store went back in time.
    RollBack,
}

/// What the file client and the store faults share.
#[derive(Default)]
pub struct Shared {
    /// Whether a store fault holds, and the records (pseudonym, hex) whose erasure was
    /// tried: one lock, so that no erasure starts once a store fault has taken its list, and
    /// a store fault leaves records being erased alone (what it took could not be told from
    /// what the erasure deleted; red team).
    pub gate: Mutex<Gate>,
    /// Objects of acknowledged uploads, each path with the SHA-256 of its ciphertext:
    /// committed, so the gateway never deletes them but for an erasure, and the only ones a
    /// store fault damages.
    pub acknowledged: Mutex<std::collections::BTreeMap<String, [u8; 32]>>,
    /// Each damage: the item, and while it lasted (from; until, once put back).
    pub damage: Mutex<Vec<(String, Instant, Option<Instant>)>>,
    /// Each download refused as tampered or missing: the item, and while it ran.
    pub refused: Mutex<Vec<(String, Instant, Instant)>>,
    /// Every record (pseudonym, hex) the file client registered.
    pub records: Mutex<BTreeSet<String>>,
}

/// See [`Shared::gate`].
#[derive(Default)]
pub struct Gate {
    /// A store fault holds, or the objects are being checked: no erasure may start.
    pub store_fault: bool,
    pub erasing: BTreeSet<String>,
}

fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The object store, the gateway in front of it, and what a store fault took.
pub struct Files {
    _garage: Option<Garage>,
    pub layout: StoreLayout,
    store: Arc<dyn ObjectStore>,
    pub gateway: Gateway,
    pub shared: Arc<Shared>,
    /// The objects at the start of the cycle: what a roll-back goes back to.
    snapshot: BTreeSet<String>,
    /// What a store fault took or changed: put back at the heal.
    saved: Vec<(String, bytes::Bytes)>,
}

/// A free port on the host's loopback.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Files {
    /// Starts the store (Garage, or a folder under `dir`) and a gateway enrolled under the
    /// network's CA, talking to `layout`'s first peer.
    ///
    /// # Errors
    /// The store or the gateway did not start.
    pub async fn start(
        dir: &Path,
        layout: &Layout,
        admin: &Wallet,
        bins: &Binaries,
        objects: ObjectsArg,
    ) -> anyhow::Result<Files> {
        let (garage, store_layout) = match objects {
            ObjectsArg::Garage => {
                let garage = Garage::start(&dir.join("garage"))
                    .context("Garage (or run with --objects local)")?;
                let store_layout = garage.layout();
                (Some(garage), store_layout)
            }
            _ => {
                let objects = dir.join("objects");
                std::fs::create_dir_all(&objects)?;
                (None, StoreLayout::Local { dir: objects })
            }
        };
        let store = store_layout.config()?.open()?;
        let wallet = ensure_identity(layout, admin, "gateway", "gateway", Vec::new()).await?;
        let mut gateway = Gateway {
            bins: Binaries {
                dir: bins.dir.clone(),
            },
            wallet: wallet.dir.clone(),
            peer: layout.first_peer().to_string(),
            address: format!("127.0.0.1:{}", free_port()?),
            state_dir: dir.join("gateway"),
            log: dir.join("gateway.log"),
            store_args: store_layout.gateway_args(),
            process: None,
        };
        gateway.start()?;
        Ok(Files {
            _garage: garage,
            layout: store_layout,
            store,
            gateway,
            shared: Arc::new(Shared::default()),
            snapshot: BTreeSet::new(),
            saved: Vec::new(),
        })
    }

    /// The patients' objects in the store now.
    async fn list(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut present = BTreeSet::new();
        let mut listing = self.store.list(Some(&ObjectPath::from(PREFIX)));
        while let Some(meta) = listing.next().await {
            present.insert(
                meta.context("listing the object store")?
                    .location
                    .to_string(),
            );
        }
        Ok(present)
    }

    /// Notes the objects now (at the start of an episode and after each heal): what a
    /// roll-back goes back to.
    pub async fn remember(&mut self) {
        if let Ok(present) = self.list().await {
            self.snapshot = present;
        }
    }

    /// Damages the store as `damage` says; `pick` chooses the objects, among the acknowledged
    /// uploads of records not being erased.
    ///
    /// # Errors
    /// The store could not be listed, read or written.
    pub async fn damage(&mut self, damage: Damage, pick: u64) -> anyhow::Result<()> {
        let erasing = {
            let mut gate = locked(&self.shared.gate);
            gate.store_fault = true;
            gate.erasing.clone()
        };
        let acknowledged = locked(&self.shared.acknowledged).clone();
        let candidates: Vec<String> = self
            .list()
            .await?
            .into_iter()
            .filter(|path| acknowledged.contains_key(path))
            .filter(|path| {
                path.split('/')
                    .nth(1)
                    .is_none_or(|pseudonym| !erasing.contains(pseudonym))
            })
            .collect();
        let chosen: Vec<String> = match damage {
            Damage::Lose { count } | Damage::Alter { count } => {
                let mut rng = rand::rngs::StdRng::seed_from_u64(pick);
                let mut chosen = candidates;
                rand::seq::SliceRandom::shuffle(chosen.as_mut_slice(), &mut rng);
                chosen.truncate(count);
                chosen
            }
            Damage::RollBack => candidates
                .into_iter()
                .filter(|p| !self.snapshot.contains(p))
                .collect(),
        };
        for path in chosen {
            let location = ObjectPath::from(path.as_str());
            let bytes = match self.store.get(&location).await {
                Ok(object) => object.bytes().await?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            };
            match damage {
                Damage::Alter { .. } => {
                    let mut altered = bytes.to_vec();
                    let at = (pick as usize) % altered.len().max(1);
                    if let Some(byte) = altered.get_mut(at) {
                        *byte ^= 0x01;
                    }
                    self.store.put(&location, altered.into()).await?;
                }
                Damage::Lose { .. } | Damage::RollBack => {
                    self.store.delete(&location).await?;
                }
            }
            if let Some(item) = path.rsplit('/').next() {
                locked(&self.shared.damage).push((item.to_string(), Instant::now(), None));
            }
            self.saved.push((path, bytes));
        }
        Ok(())
    }

    /// How many objects the last store fault damaged.
    pub fn damaged_now(&self) -> usize {
        self.saved.len()
    }

    /// Puts back what a store fault took or changed, and notes the objects then.
    ///
    /// # Errors
    /// The store could not be written.
    pub async fn restore(&mut self) -> anyhow::Result<()> {
        for (path, bytes) in std::mem::take(&mut self.saved) {
            self.store
                .put(&ObjectPath::from(path.as_str()), bytes.into())
                .await?;
        }
        let now = Instant::now();
        for damage in locked(&self.shared.damage).iter_mut() {
            damage.2.get_or_insert(now);
        }
        locked(&self.shared.gate).store_fault = false;
        self.remember().await;
        Ok(())
    }

    /// Until the gateway's journal has settled every upload and erasure it holds (bounded);
    /// how many it still holds.
    pub async fn settled(&mut self) -> usize {
        let _ = self.gateway.start();
        let start = Instant::now();
        while self.gateway.unsettled() > 0 && start.elapsed() < SETTLE_BOUND {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.gateway.unsettled()
    }

    /// Download refusals no damage explains (each a failure: the gateway or the store changed
    /// what it was given): of an item not damaged while the download ran.
    pub fn refused_undamaged(&self) -> Vec<String> {
        let damage = locked(&self.shared.damage);
        locked(&self.shared.refused)
            .iter()
            .filter(|(item, started, ended)| {
                !damage.iter().any(|(damaged, from, until)| {
                    damaged == item && *from <= *ended && until.is_none_or(|u| u >= *started)
                })
            })
            .map(|(item, _, _)| item.clone())
            .collect()
    }

    /// After a heal (what a store fault took is back): every acknowledged upload of a record
    /// not being erased is in the store with its hash. Returns what is not, in words.
    pub async fn check_acknowledged(&self) -> Vec<String> {
        // No erasure starts while the objects are read (one that did would delete objects
        // this check expects; the first version of this check failed on exactly that).
        let erasing = {
            let mut gate = locked(&self.shared.gate);
            gate.store_fault = true;
            gate.erasing.clone()
        };
        let acknowledged = locked(&self.shared.acknowledged).clone();
        let mut wrong = Vec::new();
        for (path, sha256) in acknowledged {
            let record = path.split('/').nth(1).unwrap_or_default();
            if erasing.contains(record) {
                continue;
            }
            let read = match self.store.get(&ObjectPath::from(path.as_str())).await {
                Ok(object) => object.bytes().await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match read {
                Ok(bytes) if <sha2::Sha256 as sha2::Digest>::digest(&bytes)[..] == sha256[..] => {}
                Ok(_) => wrong.push(format!(
                    "the acknowledged upload {path} is altered in the store"
                )),
                Err(e) => wrong.push(format!(
                    "the acknowledged upload {path} cannot be read: {e}"
                )),
            }
        }
        locked(&self.shared.gate).store_fault = false;
        wrong
    }

    /// How many objects store faults damaged in the episode.
    pub fn damaged_in_all(&self) -> usize {
        locked(&self.shared.damage).len()
    }
}

/// A patient whose files go through the gateway: its record's keys and what it uploaded
/// (item id, plaintext) since the record was registered. Two run at once, so that one's
/// erasure deleting the other's objects would show.
pub struct FileClient {
    index: usize,
    wallet: Wallet,
    peers: PeerSet,
    keys: Option<RecordKeys>,
    gateway: String,
    items: Vec<(String, Vec<u8>)>,
    dir: PathBuf,
    records: u64,
    shared: Arc<Shared>,
}

/// Enrolls a file client (client number `index`) and registers its first record.
///
/// # Errors
/// A setup step failed (the network is healthy during setup).
pub async fn setup(
    layout: &Layout,
    gateway: &str,
    index: usize,
    dir: &Path,
    shared: Arc<Shared>,
) -> anyhow::Result<FileClient> {
    let admin = Wallet::open(&layout.admin_wallet())?;
    let name = format!("files-patient{index}");
    let wallet = ensure_identity(layout, &admin, &name, "patient", Vec::new()).await?;
    let peers = PeerSet::connect(&wallet, layout.first_peer()).await?;
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir)?;
    let mut client = FileClient {
        index,
        wallet,
        peers,
        keys: None,
        gateway: gateway.to_string(),
        items: Vec::new(),
        dir,
        records: 0,
        shared,
    };
    client.register().await?;
    Ok(client)
}

impl FileClient {
    /// Its client number in the history.
    pub fn index(&self) -> usize {
        self.index
    }

    /// Creates the keys of a new record and registers it, until the ledger has it.
    async fn register(&mut self) -> anyhow::Result<()> {
        self.records += 1;
        let uii = format!("MRN-FAULTS-{}-{}", self.records, rand::random::<u32>());
        let keys = RecordKeys::create(&self.wallet, &uii, &[CATEGORY])?;
        let args = keys.register_args(&self.wallet.signing).encode_to_vec();
        locked(&self.shared.records).insert(hex::encode(keys.pseudonym));
        self.keys = Some(keys);
        self.items.clear();
        for _ in 0..120 {
            match self.peers.submit("register_patient", args.clone()).await {
                Ok(c) if c.is_valid() => return Ok(()),
                // Registered by an earlier try whose answer was lost.
                Ok(c) if c.code == tonic::Code::AlreadyExists as i32 => return Ok(()),
                _ => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
        bail!("the file client's record could not be registered in a minute")
    }
}

/// Runs the file client until `stop`: uploads, downloads (each compared with what was
/// uploaded), and now and then an erasure followed by a new record.
pub async fn run(
    mut client: FileClient,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
) {
    let shared = client.shared.clone();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    while !stop.load(Ordering::SeqCst) {
        if client.keys.is_none() && client.register().await.is_err() {
            continue;
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let Some(keys) = client.keys.as_ref() else {
            continue;
        };
        let connected = tokio::time::timeout(
            Duration::from_secs(5),
            files::connect_gateway(&client.wallet, &client.gateway, client.peers.revocations()),
        )
        .await;
        let Ok(Ok(mut gateway)) = connected else {
            // The gateway is down (killed): no invocation was made.
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        };
        let roll = rng.gen_range(0..100);
        let began = Instant::now();
        let start_ms = started.elapsed().as_millis() as u64;
        // An erasure only while no store fault holds, and noted before the fault can look.
        let erase = !client.items.is_empty() && roll >= 93 && {
            let mut gate = locked(&shared.gate);
            !gate.store_fault && gate.erasing.insert(hex::encode(keys.pseudonym))
        };
        let (function, tx_id, outcome) = if client.items.is_empty() || roll < 50 {
            let size = rng.gen_range(256..16_384);
            let plaintext: Vec<u8> = (0..size).map(|_| rng.r#gen()).collect();
            let input = client.dir.join("upload");
            if std::fs::write(&input, &plaintext).is_err() {
                continue;
            }
            let uploaded = match Destination::for_owner(keys, CATEGORY) {
                Ok(destination) => tokio::time::timeout(
                    INVOCATION_TIMEOUT,
                    files::upload(&client.peers, &mut gateway, &destination, &input, |_, _| {}),
                )
                .await
                .unwrap_or_else(|_| Err(ClientError::Protocol("no outcome in time".into()))),
                Err(e) => Err(e),
            };
            match uploaded {
                Ok(u) => {
                    locked(&shared.acknowledged).insert(u.path.clone(), u.sha256);
                    client.items.push((u.item_id.clone(), plaintext));
                    (
                        "upload",
                        hex::encode(u.committed.tx_id),
                        acknowledged(&u.committed),
                    )
                }
                Err(e) => ("upload", String::new(), unknown(&e)),
            }
        } else if !erase {
            let (item_id, plaintext) = &client.items[rng.gen_range(0..client.items.len())];
            let output = client.dir.join("download");
            // Nothing of an earlier download may pass for this one.
            let _ = std::fs::remove_file(&output);
            let downloaded = tokio::time::timeout(
                INVOCATION_TIMEOUT,
                files::download(
                    &client.peers,
                    &mut gateway,
                    Reader::Owner(keys),
                    keys.pseudonym,
                    item_id,
                    &output,
                    |_, _| {},
                ),
            )
            .await
            .unwrap_or_else(|_| Err(ClientError::Protocol("no outcome in time".into())));
            match downloaded {
                Ok(d) => {
                    if std::fs::read(&output).ok().as_ref() != Some(plaintext) {
                        history.violation(format!(
                            "the file client's download of item {item_id} (block {}) yielded other bytes than it uploaded",
                            d.committed.block
                        ));
                    }
                    (
                        "download",
                        hex::encode(d.committed.tx_id),
                        acknowledged(&d.committed),
                    )
                }
                Err(e) => {
                    if let ClientError::Tampered { item, .. } = &e {
                        locked(&shared.refused).push((item.clone(), began, Instant::now()));
                    }
                    ("download", String::new(), unknown(&e))
                }
            }
        } else {
            let erased = tokio::time::timeout(
                INVOCATION_TIMEOUT,
                files::erase(&client.peers, &mut gateway, keys.pseudonym),
            )
            .await
            .unwrap_or_else(|_| Err(ClientError::Protocol("no outcome in time".into())));
            // Erased or not (its outcome unknown), the record is left behind: a new one.
            if let Some(keys) = client.keys.take() {
                let _ = keys.destroy();
            }
            match erased {
                Ok((committed, _)) => (
                    "erase_patient",
                    hex::encode(committed.tx_id),
                    acknowledged(&committed),
                ),
                Err(e) => ("erase_patient", String::new(), unknown(&e)),
            }
        };
        let end_ms = started.elapsed().as_millis() as u64;
        let failed = matches!(outcome, Outcome::Unknown { .. });
        record(
            &history,
            Invocation {
                client: client.index,
                function: function.to_string(),
                tx_id,
                start_ms,
                end_ms,
                outcome,
            },
        );
        if failed {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
        }
    }
}

fn acknowledged(c: &medledger_sdk::peer::Committed) -> Outcome {
    Outcome::Acknowledged {
        block: c.block,
        status: c.status.as_str_name().to_string(),
    }
}

fn unknown(e: &ClientError) -> Outcome {
    Outcome::Unknown {
        error: short(&e.to_string()),
    }
}
