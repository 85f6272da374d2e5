//! `medledger-load`: load against a running network, closed loop or open loop, over a
//! clinical mix of transactions signed as real clients sign them.
//!
//! Setup (not measured): `--identities` pairs of a patient and a clinician are registered and
//! enrolled with the admin wallet; each patient registers a record with a lab-results
//! category, grants its clinician read and write for a day, and the clinician adds one item.
//!
//! Then, for `--duration` seconds, operations drawn from `--mix` (by weight):
//! - `grant`: the patient grants read on lab-results to another clinician, for a day;
//! - `check_access`: the clinician asks whether it may read (a query, answered by one peer,
//!   never ordered);
//! - `add_item`: the clinician adds an item's metadata (hash, size, wrapped key, path);
//! - `record_access`: the clinician records a read of one of the record's items (the audit
//!   entry every download makes).
//!
//! Closed loop (`--clients N`): N workers, each with one operation in flight. Open loop
//! (`--rate R`): arrivals are a Poisson process of R operations per second, submitted whether
//! or not earlier ones have committed. A transaction counts when a peer returned a commit proof
//! that checks; its latency is from signing to that moment.
//!
//! At the end of the measured window it counts the backlog: submitted, not yet committed. It
//! then waits up to `--drain` seconds for them and reports what is still unsealed. CPU time is
//! the user+system time of every process whose pid file is in the network directory (CA,
//! peers, gateway) plus this process, over the measured window.
//!
//! ```sh
//! medledger-load --network-dir .medledger --clients 64 --duration 30
//! medledger-load --network-dir .medledger --rate 500 --duration 60 --json-out results.jsonl
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use medledger_devnet::{self as network, Layout};
use medledger_proto::v1;
use medledger_sdk::ca::{CaClient, TlsIdentity};
use medledger_sdk::peer::PeerSet;
use medledger_sdk::private_data::PrivateData;
use medledger_sdk::wallet::Wallet;
use prost::Message;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::Mutex;

#[derive(Parser)]
#[command(
    name = "medledger-load",
    about = "Closed- or open-loop load against a medledger network"
)]
struct Args {
    /// The network's directory (`medledger network up --dir`): its admin wallet, its first
    /// peer, and the pid files whose processes' CPU time is counted.
    #[arg(long)]
    network_dir: PathBuf,
    /// Closed loop: this many workers, each with one operation in flight.
    #[arg(long, conflicts_with = "rate")]
    clients: Option<usize>,
    /// Open loop: Poisson arrivals at this many operations per second.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// Seconds of load before the measured window (not counted).
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// After the window, wait at most this many seconds for the backlog to commit.
    #[arg(long, default_value_t = 30.0)]
    drain: f64,
    /// Patient/clinician pairs that sign the load (open loop: arrivals pick one at random).
    #[arg(long, default_value_t = 64)]
    identities: usize,
    /// Weights of the operations.
    #[arg(
        long,
        default_value = "grant=10,check_access=35,add_item=20,record_access=35"
    )]
    mix: String,
    /// Open loop: arrivals beyond this many outstanding are refused at the source and counted
    /// as backlog (keeps an overloaded run from exhausting memory).
    #[arg(long, default_value_t = 50_000)]
    max_outstanding: u64,
    /// Seed of the arrival times and the choice of operations.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// A label for this run in the JSON output.
    #[arg(long, default_value = "")]
    label: String,
    /// Append the results as one JSON line to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Op {
    Grant,
    CheckAccess,
    AddItem,
    RecordAccess,
}

impl Op {
    const ALL: [Op; 4] = [Op::Grant, Op::CheckAccess, Op::AddItem, Op::RecordAccess];
    fn name(self) -> &'static str {
        match self {
            Op::Grant => "grant",
            Op::CheckAccess => "check_access",
            Op::AddItem => "add_item",
            Op::RecordAccess => "record_access",
        }
    }
    fn is_query(self) -> bool {
        self == Op::CheckAccess
    }
}

fn parse_mix(text: &str) -> anyhow::Result<Vec<(Op, u32)>> {
    let mut mix = Vec::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .with_context(|| format!("--mix {part:?}: expected NAME=WEIGHT"))?;
        let op = Op::ALL
            .into_iter()
            .find(|o| o.name() == name.trim())
            .with_context(|| {
                format!("--mix: unknown operation {name:?} (grant, check_access, add_item, record_access)")
            })?;
        mix.push((op, weight.trim().parse().context("--mix weight")?));
    }
    anyhow::ensure!(
        mix.iter().map(|(_, w)| w).sum::<u32>() > 0,
        "--mix: the weights add up to zero"
    );
    Ok(mix)
}

fn pick(mix: &[(Op, u32)], rng: &mut impl Rng) -> Op {
    let total: u32 = mix.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (op, w) in mix {
        if x < *w {
            return *op;
        }
        x -= w;
    }
    mix[0].0
}

/// One patient and the clinician it granted read and write.
struct Pair {
    patient: Arc<PeerSet>,
    clinician: Arc<PeerSet>,
    clinician_name: String,
    pseudonym: Vec<u8>,
    items: Mutex<Vec<String>>,
    next_item: AtomicU64,
}

const CATEGORY: &str = "lab-results";

/// The id of a pair's n-th item.
fn item_id(n: u64) -> String {
    format!("item-{n}")
}

impl Pair {
    /// A grant to a random clinician, its envelope as private data on a ledger that keeps
    /// it (docs/adr/0017): the load's private transactions.
    fn grant_args(&self, rng: &mut impl Rng) -> (Vec<u8>, PrivateData) {
        let mut grant = v1::GrantArgs {
            pseudonym: self.pseudonym.clone(),
            grantee: format!("dr-{}", rng.gen_range(0..1000)),
            category: CATEGORY.into(),
            rights: vec![v1::Right::Read as i32],
            // The window opens at commit, in consensus time: no clock of ours shapes it.
            from_commit: true,
            duration_seconds: 86_400,
            // The size of a real HPKE envelope of the category key.
            key_envelope: vec![0x5a; 80],
            ..Default::default()
        };
        let private = self.patient.grant_envelope_private(&mut grant);
        (grant.encode_to_vec(), private)
    }

    /// The pair's n-th item, its wrapped file key as private data on a ledger that keeps it.
    fn add_item_args(&self, n: u64) -> (Vec<u8>, PrivateData) {
        let item_id = item_id(n);
        let mut sha256 = [0u8; 32];
        sha256[..8].copy_from_slice(&n.to_be_bytes());
        let mut item = v1::AddItemArgs {
            pseudonym: self.pseudonym.clone(),
            path: format!(
                "patients/{}/{CATEGORY}/{item_id}",
                hex::encode(&self.pseudonym)
            ),
            item_id,
            category: CATEGORY.into(),
            sha256: sha256.to_vec(),
            size: 180_000,
            // The size of a real HPKE-wrapped file key.
            wrapped_dek: vec![0x5a; 80],
            key_epoch: 1,
            ..Default::default()
        };
        let private = self.clinician.item_key_private(&mut item);
        (item.encode_to_vec(), private)
    }

    /// The clinician asks whether it may read: a query, answered by one peer.
    async fn check_access(&self) -> (bool, String) {
        let args = v1::CheckAccessArgs {
            pseudonym: self.pseudonym.clone(),
            grantee: self.clinician_name.clone(),
            category: CATEGORY.into(),
            right: v1::Right::Read as i32,
            ..Default::default()
        };
        match self
            .clinician
            .query_as::<v1::CheckAccessResult>("check_access", args)
            .await
        {
            Ok(r) if r.allowed => (true, "QUERY_ALLOWED".into()),
            Ok(_) => (false, "QUERY_DENIED".into()),
            Err(e) => (false, format!("ERROR {}", short(&e.to_string()))),
        }
    }

    /// Runs one operation; returns whether it counts as done and its status name.
    async fn run(&self, op: Op, rng_seed: u64) -> (bool, String) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(rng_seed);
        let mut added = None;
        let mut private = self.patient.private_data();
        let (peers, function, args) = match op {
            Op::Grant => {
                let (args, values) = self.grant_args(&mut rng);
                private = values;
                (&self.patient, "grant", args)
            }
            Op::AddItem => {
                let n = self.next_item.fetch_add(1, Ordering::Relaxed);
                added = Some(item_id(n));
                let (args, values) = self.add_item_args(n);
                private = values;
                (&self.clinician, "add_item", args)
            }
            Op::CheckAccess => return self.check_access().await,
            Op::RecordAccess => {
                let items = self.items.lock().await;
                let item_id = items[rng.gen_range(0..items.len())].clone();
                drop(items);
                let args = v1::RecordAccessArgs {
                    pseudonym: self.pseudonym.clone(),
                    item_id,
                };
                (&self.clinician, "record_access", args.encode_to_vec())
            }
        };
        match peers.submit_maybe_private(function, args, &private).await {
            Ok(c) => {
                if let Some(item) = added.filter(|_| c.is_valid()) {
                    // Later record_access operations may read it.
                    self.items.lock().await.push(item);
                }
                (c.is_valid(), c.status.as_str_name().to_string())
            }
            Err(e) => (false, format!("ERROR {}", short(&e.to_string()))),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// The load's wallets, kept current while it runs (certificates shorter than the run are
/// renewed, as any long-running client renews them: `medledger_sdk::renewal`); dropped at
/// the end, with the renewals.
struct Identities {
    renewals: tokio::task::JoinSet<()>,
    dir: std::path::PathBuf,
}

impl Drop for Identities {
    fn drop(&mut self) {
        self.renewals.abort_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn setup(layout: &Layout, count: usize) -> anyhow::Result<(Vec<Arc<Pair>>, Identities)> {
    let admin = Wallet::open(&layout.admin_wallet())?;
    let root = admin.root()?.der().to_vec();
    let genesis = medledger_sdk::peer::read_genesis_file(&layout.genesis())?;
    let mut ca = CaClient::connect(&admin.info.ca_url, &root, TlsIdentity::Wallet(&admin)).await?;
    let tag: u32 = rand::random();
    let dir = std::env::temp_dir().join(format!("medledger-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut enroll = async |name: String, role: &str| -> anyhow::Result<Wallet> {
        let registered = ca
            .register(v1::RegisterRequest {
                name: name.clone(),
                role: role.into(),
                attributes: vec![],
                max_enrollments: 1,
            })
            .await?;
        let wallet = medledger_sdk::enroll(
            &admin.info.ca_url,
            &root,
            &name,
            &registered.secret,
            &dir.join(&name),
        )
        .await?;
        medledger_sdk::peer::pin_network(&wallet, genesis.clone())?;
        Ok(wallet)
    };
    let mut wallets = Vec::new();
    for i in 0..count {
        let patient = enroll(format!("load-{tag:08x}-p{i}"), "patient").await?;
        let clinician_name = format!("load-{tag:08x}-c{i}");
        let clinician = enroll(clinician_name.clone(), "clinician").await?;
        wallets.push((patient, clinician, clinician_name));
    }
    let mut identities = Identities {
        renewals: tokio::task::JoinSet::new(),
        dir: dir.clone(),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (patient, clinician, clinician_name)) in wallets.into_iter().enumerate() {
        let peer = layout.first_peer().to_string();
        tasks.spawn(async move {
            let pair = Pair {
                patient: Arc::new(PeerSet::connect(&patient, &peer).await?),
                clinician: Arc::new(PeerSet::connect(&clinician, &peer).await?),
                clinician_name: clinician_name.clone(),
                pseudonym: {
                    let mut p = [0u8; 32];
                    rand::thread_rng().fill(&mut p);
                    p.to_vec()
                },
                items: Mutex::new(Vec::new()),
                next_item: AtomicU64::new(0),
            };
            let register = v1::RegisterPatientArgs {
                pseudonym: pair.pseudonym.clone(),
                // Only its shape is the ledger's to check; no reason is sealed to it.
                owner_encryption_key: vec![7; 32],
                category_keys: vec![v1::CategoryKey {
                    category: CATEGORY.into(),
                    public_key: vec![7; 32],
                    // Only its length is the ledger's to check; no file is encrypted to it.
                    owner_signature: vec![7; 64],
                    ..Default::default()
                }],
            };
            pair.patient
                .submit("register_patient", register.encode_to_vec())
                .await?
                .into_valid()?;
            let mut grant = v1::GrantArgs {
                pseudonym: pair.pseudonym.clone(),
                grantee: clinician_name,
                category: CATEGORY.into(),
                rights: vec![v1::Right::Read as i32, v1::Right::Write as i32],
                // The window opens at commit, in consensus time: no clock of ours shapes it.
                from_commit: true,
                duration_seconds: 86_400,
                key_envelope: vec![0x5a; 80],
                ..Default::default()
            };
            let private = pair.patient.grant_envelope_private(&mut grant);
            pair.patient
                .submit_maybe_private("grant", grant.encode_to_vec(), &private)
                .await?
                .into_valid()?;
            let n = pair.next_item.fetch_add(1, Ordering::Relaxed);
            let (args, private) = pair.add_item_args(n);
            pair.clinician
                .submit_maybe_private("add_item", args, &private)
                .await?
                .into_valid()?;
            pair.items.lock().await.push(item_id(n));
            anyhow::Ok((i, Arc::new(pair), patient, clinician))
        });
    }
    let mut pairs = Vec::new();
    while let Some(done) = tasks.join_next().await {
        let (i, pair, patient, clinician) = done??;
        for (wallet, peers) in [(patient, &pair.patient), (clinician, &pair.clinician)] {
            identities
                .renewals
                .spawn(medledger_sdk::renewal::keep_renewed(wallet, peers.clone()));
        }
        pairs.push((i, pair));
    }
    pairs.sort_by_key(|(i, _)| *i);
    Ok((pairs.into_iter().map(|(_, p)| p).collect(), identities))
}

/// What every finished operation reports.
struct Sample {
    op: Op,
    submitted: Instant,
    finished: Instant,
    ok: bool,
    status: String,
}

#[derive(Default)]
struct Recorder {
    samples: std::sync::Mutex<Vec<Sample>>,
    outstanding: AtomicU64,
    refused: AtomicU64,
}

impl Recorder {
    async fn perform(self: &Arc<Self>, pair: Arc<Pair>, op: Op, seed: u64) {
        let submitted = Instant::now();
        let (ok, status) = pair.run(op, seed).await;
        let finished = Instant::now();
        self.samples.lock().unwrap().push(Sample {
            op,
            submitted,
            finished,
            ok,
            status,
        });
    }
}

/// user + system CPU seconds of a process (USER_HZ is 100 on Linux).
fn cpu_seconds(pid: &str) -> f64 {
    let Some(fields) = network::proc_stat_fields(pid) else {
        return 0.0;
    };
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

fn network_pids(dir: &Path) -> Vec<String> {
    let mut pids = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "pid")
                && let Ok(text) = std::fs::read_to_string(e.path())
            {
                pids.push(text.trim().to_string());
            }
        }
    }
    pids
}

fn cpu_now(pids: &[String]) -> (f64, f64) {
    (
        pids.iter().map(|p| cpu_seconds(p)).sum(),
        cpu_seconds("self"),
    )
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mix = parse_mix(&args.mix)?;
    anyhow::ensure!(
        args.clients.is_some() != args.rate.is_some(),
        "give --clients N (closed loop) or --rate R (open loop)"
    );
    anyhow::ensure!(args.identities > 0, "--identities must be at least 1");
    let layout = Layout::read(&args.network_dir)?;
    let identities = args.clients.unwrap_or(args.identities).max(1);
    eprintln!("setting up {identities} patient/clinician pairs...");
    let (pairs, _wallets) = setup(&layout, identities).await.context(
        "setting up the load's identities (is the network up, and is its admin wallet there?)",
    )?;
    let n = pairs[0].patient.n();
    let recorder = Arc::new(Recorder::default());
    let stop = Arc::new(AtomicBool::new(false));
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = Duration::from_secs_f64(args.duration);
    let start = Instant::now();
    let window_start = start + warmup;
    let window_end = window_start + window;
    let pids = network_pids(&args.network_dir);

    let mut workers = tokio::task::JoinSet::new();
    match (args.clients, args.rate) {
        (Some(clients), _) => {
            for (w, pair) in pairs.iter().cycle().take(clients).enumerate() {
                let pair = pair.clone();
                let recorder = recorder.clone();
                let stop = stop.clone();
                let mix = mix.clone();
                let seed = args.seed.wrapping_mul(1_000_003).wrapping_add(w as u64);
                workers.spawn(async move {
                    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                    while !stop.load(Ordering::Relaxed) {
                        let op = pick(&mix, &mut rng);
                        recorder.outstanding.fetch_add(1, Ordering::SeqCst);
                        recorder.perform(pair.clone(), op, rng.r#gen()).await;
                        recorder.outstanding.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        }
        (None, Some(rate)) => {
            anyhow::ensure!(rate > 0.0, "--rate must be positive");
            let recorder = recorder.clone();
            let stop = stop.clone();
            let mix = mix.clone();
            let pairs = pairs.clone();
            let seed = args.seed;
            let max_outstanding = args.max_outstanding;
            workers.spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
                let mut next = Instant::now();
                let mut tasks = tokio::task::JoinSet::new();
                while !stop.load(Ordering::Relaxed) {
                    let u: f64 = rng.gen_range(f64::MIN_POSITIVE..1.0);
                    next += Duration::from_secs_f64(-u.ln() / rate);
                    tokio::time::sleep_until(next.into()).await;
                    let op = pick(&mix, &mut rng);
                    let pair = pairs[rng.gen_range(0..pairs.len())].clone();
                    if recorder.outstanding.load(Ordering::SeqCst) >= max_outstanding {
                        recorder.refused.fetch_add(1, Ordering::SeqCst);
                        continue;
                    }
                    recorder.outstanding.fetch_add(1, Ordering::SeqCst);
                    let recorder = recorder.clone();
                    let seed = rng.r#gen();
                    tasks.spawn(async move {
                        recorder.perform(pair, op, seed).await;
                        recorder.outstanding.fetch_sub(1, Ordering::SeqCst);
                    });
                    while tasks.try_join_next().is_some() {}
                }
                while tasks.join_next().await.is_some() {}
            });
        }
        _ => unreachable!(),
    }

    tokio::time::sleep_until(window_start.into()).await;
    let cpu_start = cpu_now(&pids);
    tokio::time::sleep_until(window_end.into()).await;
    let cpu_end = cpu_now(&pids);
    stop.store(true, Ordering::SeqCst);
    let backlog_at_end = recorder.outstanding.load(Ordering::SeqCst);
    let drain_start = Instant::now();
    let drain_limit = Duration::from_secs_f64(args.drain);
    while recorder.outstanding.load(Ordering::SeqCst) > 0 && drain_start.elapsed() < drain_limit {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let unsealed_after_drain = recorder.outstanding.load(Ordering::SeqCst);
    let drained_in = drain_start.elapsed();
    if unsealed_after_drain == 0 {
        while workers.join_next().await.is_some() {}
    } else {
        workers.abort_all();
    }

    let samples = std::mem::take(&mut *recorder.samples.lock().unwrap());
    report(
        &args,
        n,
        &samples,
        window_start,
        window_end,
        (cpu_end.0 - cpu_start.0, cpu_end.1 - cpu_start.1),
        backlog_at_end + recorder.refused.load(Ordering::SeqCst),
        unsealed_after_drain,
        drained_in,
    )
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    n: usize,
    samples: &[Sample],
    window_start: Instant,
    window_end: Instant,
    cpu: (f64, f64),
    backlog_at_end: u64,
    unsealed_after_drain: u64,
    drained_in: Duration,
) -> anyhow::Result<()> {
    let seconds = (window_end - window_start).as_secs_f64();
    let in_window = |s: &&Sample| s.finished >= window_start && s.finished < window_end;
    let done: Vec<&Sample> = samples.iter().filter(in_window).collect();
    let committed: Vec<&&Sample> = done.iter().filter(|s| s.ok && !s.op.is_query()).collect();
    let queries: Vec<&&Sample> = done.iter().filter(|s| s.ok && s.op.is_query()).collect();
    let mut tx_latency: Vec<Duration> =
        committed.iter().map(|s| s.finished - s.submitted).collect();
    tx_latency.sort();
    let mut query_latency: Vec<Duration> =
        queries.iter().map(|s| s.finished - s.submitted).collect();
    query_latency.sort();
    let mut per_second = vec![0u64; seconds.ceil() as usize];
    for s in &committed {
        let i = (s.finished - window_start).as_secs() as usize;
        if let Some(b) = per_second.get_mut(i) {
            *b += 1;
        }
    }
    let full_seconds = &per_second[..(seconds.floor() as usize).max(1).min(per_second.len())];
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_op: BTreeMap<&str, u64> = BTreeMap::new();
    for s in &done {
        *statuses
            .entry(format!("{} {}", s.op.name(), s.status))
            .or_default() += 1;
        if s.ok {
            *by_op.entry(s.op.name()).or_default() += 1;
        }
    }
    let tx_s = committed.len() as f64 / seconds;
    let q_s = queries.len() as f64 / seconds;
    let ops = (committed.len() + queries.len()).max(1) as f64;
    let mode = match (args.clients, args.rate) {
        (Some(c), _) => format!("closed loop, {c} clients"),
        (_, Some(r)) => format!("open loop, {r} ops/s offered (Poisson)"),
        _ => unreachable!(),
    };
    println!(
        "{} peers, {mode}, {seconds:.0} s measured after {:.0} s warm-up",
        n, args.warmup
    );
    println!(
        "committed transactions: {} ({tx_s:.0} tx/s; per second min {} max {}); queries answered: {} ({q_s:.0}/s)",
        committed.len(),
        full_seconds.iter().min().unwrap_or(&0),
        full_seconds.iter().max().unwrap_or(&0),
        queries.len()
    );
    println!(
        "commit latency (to a checked commit proof): p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        percentile_ms(&tx_latency, 0.50),
        percentile_ms(&tx_latency, 0.99),
        percentile_ms(&tx_latency, 0.999),
        percentile_ms(&tx_latency, 1.0)
    );
    println!(
        "query latency: p50 {:.1} ms, p99 {:.1} ms",
        percentile_ms(&query_latency, 0.50),
        percentile_ms(&query_latency, 0.99)
    );
    println!(
        "CPU: network {:.1} s + load generator {:.1} s over {seconds:.0} s on {} cores = {:.0} µs per operation ({:.0} µs in the network)",
        cpu.0,
        cpu.1,
        std::thread::available_parallelism().map_or(1, |p| p.get()),
        (cpu.0 + cpu.1) / ops * 1e6,
        cpu.0 / ops * 1e6
    );
    println!(
        "backlog (submitted, not committed) at the end: {backlog_at_end}; after draining {:.1} s: {unsealed_after_drain}",
        drained_in.as_secs_f64()
    );
    for (status, count) in &statuses {
        println!("  {status}: {count}");
    }
    if let Some(path) = &args.json_out {
        let line = json!({
            "label": args.label,
            "peers": n,
            "mode": if args.clients.is_some() { "closed" } else { "open" },
            "clients": args.clients,
            "offered_rate": args.rate,
            "mix": args.mix,
            "seconds": seconds,
            "committed": committed.len(),
            "tx_per_s": tx_s,
            "tx_per_s_min_second": full_seconds.iter().min(),
            "tx_per_s_max_second": full_seconds.iter().max(),
            "queries_per_s": q_s,
            "p50_ms": percentile_ms(&tx_latency, 0.50),
            "p99_ms": percentile_ms(&tx_latency, 0.99),
            "p999_ms": percentile_ms(&tx_latency, 0.999),
            "max_ms": percentile_ms(&tx_latency, 1.0),
            "query_p50_ms": percentile_ms(&query_latency, 0.50),
            "query_p99_ms": percentile_ms(&query_latency, 0.99),
            "cpu_network_s": cpu.0,
            "cpu_load_s": cpu.1,
            "cpu_us_per_op": (cpu.0 + cpu.1) / ops * 1e6,
            "backlog_at_end": backlog_at_end,
            "unsealed_after_drain": unsealed_after_drain,
            "per_second": per_second,
            "done_by_op": by_op,
            "statuses": statuses,
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        use std::io::Write;
        writeln!(f, "{line}")?;
    }
    Ok(())
}
