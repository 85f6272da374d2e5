//! `medledger-faults`: faults on real processes (issue 18). A run is a seed and a number of
//! fault cycles, done in episodes of a fresh network each (CA, 4 peers in their own network
//! namespaces). In every cycle a fault drawn from the seed ([`fault::Fault`]) holds for a few
//! seconds under the clinical workload ([`workload`]), is healed, and the harness measures
//! how long until every peer commits past the height at the heal. After an episode the
//! peers stop and the checker ([`checker`]) compares their chains with the history.
//!
//! ```text
//! medledger-faults run --seed 7 --cycles 1000 --state faults.json   # resumable
//! medledger-faults run --seed 7 --episode 12                        # replay one episode
//! ```
//! Every failure prints its seed, its episode and the one command that replays it. Needs
//! root, iproute2 and nftables.

mod checker;
mod disk;
mod fault;
mod files;
mod netns;
mod network;
mod workload;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::fault::Fault;
use crate::network::Network;
use crate::workload::{History, Outcome};

/// Longest a network may take, once healed, to commit again on every peer.
const RECOVERY_BOUND: Duration = Duration::from_secs(90);
/// Longest a full disk is held waiting for its peer to run out of space.
const DISK_FULL_BOUND: Duration = Duration::from_secs(90);
/// Clients in each episode (each a patient and a clinician).
const CLIENTS: usize = 6;

#[derive(Parser)]
#[command(
    name = "medledger-faults",
    about = "Faults on real processes, and a checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs fault cycles from a seed, in episodes of a fresh network each.
    Run(RunArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    #[arg(long)]
    seed: u64,
    /// Fault cycles in all.
    #[arg(long, default_value_t = 10)]
    cycles: u64,
    /// Cycles per episode (per fresh network).
    #[arg(long, default_value_t = 10)]
    cycles_per_episode: u64,
    /// Runs only this episode (what a failure says to replay).
    #[arg(long)]
    episode: Option<u64>,
    /// Progress and figures, kept after every episode: a run given the same file continues
    /// where it stopped.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Where the episodes' networks, logs and histories go (default: a new temp dir). An
    /// episode that passed is removed; one that failed is kept.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Only these fault kinds (comma-separated: split, isolate-primary, isolate, one-way,
    /// drop, kill, kill-all, pause, clock, disk-full, corrupt, gateway-kill, store-lose,
    /// store-alter, store-rollback, slow-disk, rekey); default: all but rekey, which is
    /// drawn only when named (a seed's draws stay what they were before it existed).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// Keeps the folders of episodes that passed too.
    #[arg(long)]
    keep: bool,
    /// Stops after this many episodes in this invocation (the `--state` file keeps the
    /// progress; the same command continues). A long run can so be done in sittings.
    #[arg(long)]
    max_episodes: Option<u64>,
    /// The folder of medledger-ca, medledger-peer, medledger-gateway and medledger
    /// (default: this binary's).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where the gateway keeps the files the file client uploads: `garage` (a real S3
    /// server, `deploy/garage`), `local` (a folder), or `none` (no files, no gateway, and
    /// none of the gateway-kill and store-* faults).
    #[arg(long, value_enum, default_value = "garage")]
    objects: files::ObjectsArg,
    /// Peers in the network: 4 (f = 1) or 7 (f = 2).
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=7))]
    peers: u8,
    /// One peer lies to every client while the faults hold: `NAME:KIND+KIND…` or
    /// `peer0:all` (the lying-peer mode of debug builds, docs/RELIABILITY.md).
    #[arg(long)]
    lie: Option<String>,
}

/// A run's progress and figures (the `--state` file).
#[derive(Default, Serialize, Deserialize)]
struct Progress {
    seed: u64,
    cycles: u64,
    cycles_per_episode: u64,
    episodes_done: u64,
    cycles_done: u64,
    invocations: u64,
    acknowledged: u64,
    unknown: u64,
    unknown_committed: u64,
    lost: u64,
    /// Per fault kind: milliseconds from each heal until every peer committed past it.
    recovery_ms: BTreeMap<String, Vec<u64>>,
    /// Per episode: the 99th percentile of acknowledged invocations' latency (ms).
    p99_ms: Vec<u64>,
    /// Per fault kind: milliseconds from each heal until `network status` said every peer
    /// takes part again.
    #[serde(default)]
    rejoin_ms: BTreeMap<String, Vec<u64>>,
}

/// One episode's figures.
struct Episode {
    cycles: u64,
    recovery_ms: Vec<(&'static str, u64)>,
    /// Per cycle: its kind, and milliseconds from the heal until every peer took part again.
    rejoin_ms: Vec<(&'static str, u64)>,
    history: Vec<workload::Invocation>,
    verdict: checker::Verdict,
}

fn episode_seed(seed: u64, episode: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ episode.wrapping_add(1).wrapping_mul(0xbf58_476d_1ce4_e5b9)
}

/// Until every peer answers at a height above `above`; the time it took.
async fn recovered(
    network: &Network,
    client: &medledger_sdk::peer::PeerSet,
    above: u64,
) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < RECOVERY_BOUND {
        let standings = network.standings(client).await;
        if standings
            .iter()
            .all(|s| s.as_ref().is_some_and(|s| s.height > above))
        {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    None
}

/// Whether the peers read the clock-offset file (debug builds): peer 0 is moved 100 s ahead
/// for a moment and must say so in its `GetStatus.clock_ms`.
async fn clock_can_move(network: &Network) -> bool {
    if network.set_clock(0, 100).is_err() {
        return false;
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let client =
        medledger_sdk::peer::PeerSet::connect(&network.admin, network.layout.first_peer()).await;
    let mut moved = false;
    if let Ok(client) = client {
        let mut peer = client.peer(0);
        if let Ok(Ok(status)) = tokio::time::timeout(
            Duration::from_secs(2),
            peer.get_status(medledger_proto::v1::GetStatusRequest {}),
        )
        .await
        {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .unwrap_or(0);
            moved = status.into_inner().clock_ms - now > 50_000;
        }
    }
    let _ = network.set_clock(0, 0);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    moved
}

/// Until `medledger network status` says every peer takes part: `Ok(how long)` (from
/// `since`), or `Err(what it said last)` after [`RECOVERY_BOUND`]. A peer left changing view
/// alone after a heal fails the cycle (before the suspicion phase of consensus/src/
/// suspicion.rs, a peer cut off alone stayed out until the network's next view change; before
/// its primary stepped down for it, one that counted lapsed suspicions under message loss).
async fn all_take_part(
    client: &medledger_sdk::peer::PeerSet,
    since: Instant,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut said_slow = false;
    loop {
        let now = medledger_devnet::participation_of(client).await;
        if now.out.is_empty() {
            return Ok(since.elapsed());
        }
        // A slow return is shown with its reason, for whoever reads the run.
        if !said_slow && start.elapsed() >= Duration::from_secs(20) {
            said_slow = true;
            println!(
                "  20 s after the heal status still says: {}",
                now.describe()
            );
        }
        if start.elapsed() >= RECOVERY_BOUND {
            return Err(now.describe());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Until every peer holds the same height and head twice in a row (the workload stopped).
async fn converged(network: &Network, client: &medledger_sdk::peer::PeerSet) -> bool {
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < RECOVERY_BOUND {
        let standings = network.standings(client).await;
        let heads: Option<Vec<(u64, Vec<u8>)>> = standings
            .iter()
            .map(|s| s.as_ref().map(|s| (s.height, s.head.clone())))
            .collect();
        if let Some(heads) = heads
            && heads.windows(2).all(|w| w[0] == w[1])
        {
            if last.as_ref() == Some(&heads) {
                return true;
            }
            last = Some(heads);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

/// A return to the normal case this slow keeps the logs of its episode
/// ([`keep_logs`]), for whoever looks into it.
const SLOW_RETURN: Duration = Duration::from_secs(20);

/// Copies every peer's log and the gateway's beside the episode's folder, under `name`
/// (kept when the episode's folder is removed), and says where.
fn keep_logs(network: &Network, dir: &Path, name: &str) {
    let Some(kept) = dir.parent().map(|p| p.join(name)) else {
        return;
    };
    if std::fs::create_dir_all(&kept).is_err() {
        return;
    }
    let mut logs: Vec<PathBuf> = network.peers.iter().map(|p| p.log.clone()).collect();
    if let Some(files) = &network.files {
        logs.push(files.gateway.log.clone());
    }
    for log in logs {
        if let Some(name) = log.file_name() {
            let _ = std::fs::copy(&log, kept.join(name));
        }
    }
    println!("  logs kept in {}", kept.display());
}

/// `kinds` (all when empty) without `left_out`; fails, saying `why`, when none is left.
fn leave_out(kinds: Vec<String>, left_out: &[&str], why: &str) -> anyhow::Result<Vec<String>> {
    let wanted: Vec<String> = if kinds.is_empty() {
        fault::KINDS[..fault::DRAWN]
            .iter()
            .map(|k| k.to_string())
            .collect()
    } else {
        kinds
    };
    let kept: Vec<String> = wanted
        .into_iter()
        .filter(|k| !left_out.contains(&k.as_str()))
        .collect();
    anyhow::ensure!(!kept.is_empty(), "{why}: no fault left to draw");
    Ok(kept)
}

async fn run_episode(
    seed: u64,
    index: u64,
    cycles: u64,
    dir: &Path,
    bins: &Path,
    kinds: &[String],
    args: &RunArgs,
) -> anyhow::Result<Episode> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(episode_seed(seed, index));
    let mut network = Network::start(
        dir,
        bins,
        usize::from(args.peers),
        (std::process::id() + index as u32) % 200,
        args.objects,
        args.lie.clone(),
    )
    .await?;
    let client = medledger_sdk::peer::PeerSet::connect(&network.admin, network.layout.first_peer())
        .await
        .context("connecting to the network")?;
    // The clock fault needs peers built with debug assertions (release builds never read
    // the offset file): find out, and leave it out otherwise.
    let mut kinds: Vec<String> = kinds.to_vec();
    if !clock_can_move(&network).await {
        kinds = leave_out(
            kinds,
            &["clock"],
            "these peers cannot have their clock moved (release builds)",
        )?;
        println!("  (release peers: the clock fault is left out)");
    }
    if !disk::can_slow() {
        kinds = leave_out(
            kinds,
            &["slow-disk"],
            "this kernel has no block-I/O throttling (cgroup v1 blkio)",
        )?;
        println!("  (no block-I/O throttling here: the slow-disk fault is left out)");
    }
    if network.files.is_none() {
        kinds = leave_out(
            kinds,
            &fault::FILE_KINDS,
            "--objects none: the gateway and store faults need files",
        )?;
    }
    let kinds = kinds.as_slice();
    let pairs = workload::setup(&network.layout, CLIENTS)
        .await
        .context("setting up the clients")?;
    /// Patients moving files through the gateway (after the clinical clients' numbers).
    const FILE_CLIENTS: usize = 2;
    let mut file_clients = Vec::new();
    if let Some(f) = &network.files {
        for k in 0..FILE_CLIENTS {
            file_clients.push(
                files::setup(
                    &network.layout,
                    &f.gateway.address,
                    CLIENTS + k,
                    dir,
                    f.shared.clone(),
                )
                .await
                .context("setting up the file clients")?,
            );
        }
    }
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(History::default());
    let clients = tokio::spawn(workload::run(
        pairs,
        rng.r#gen(),
        started,
        stop.clone(),
        history.clone(),
    ));
    let file_seed: u64 = rng.r#gen();
    let file_stop = Arc::new(AtomicBool::new(false));
    let file_tasks: Vec<_> = file_clients
        .into_iter()
        .map(|client| {
            let seed = file_seed ^ (client.index() as u64).wrapping_mul(0x9e37_79b9);
            tokio::spawn(files::run(
                client,
                seed,
                started,
                file_stop.clone(),
                history.clone(),
            ))
        })
        .collect();
    if let Some(files) = network.files.as_mut() {
        files.remember().await;
    }
    let mut recovery_ms = Vec::new();
    let mut rejoin_ms = Vec::new();
    let mut failures = Vec::new();
    for cycle in 0..cycles {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2_000))).await;
        let standings = network.standings(&client).await;
        let primary = standings
            .iter()
            .flatten()
            .map(|s| s.primary as usize)
            .find(|&p| p < network.peers.len())
            .unwrap_or(0);
        let at_inject = standings
            .iter()
            .flatten()
            .map(|s| s.height)
            .max()
            .unwrap_or(0);
        let fault = Fault::draw_of(&mut rng, network.peers.len(), primary, kinds);
        let height_of = |standings: &[Option<network::Standing>], peer: usize| {
            standings
                .get(peer)
                .and_then(|s| s.as_ref())
                .map(|s| s.height)
        };
        let slowed_from = match fault {
            Fault::SlowDisk { peer, .. } => height_of(&standings, peer),
            _ => None,
        };
        let hold = Duration::from_millis(rng.gen_range(2_000..6_000));
        println!(
            "episode {index} cycle {cycle}: {fault:?} for {} ms",
            hold.as_millis()
        );
        fault.inject(&mut network).await?;
        if let Fault::Rekey { .. } = fault {
            // The harness's own client follows the change (its replica ids moved).
            client
                .learn_configuration(None)
                .await
                .context("following the change that replaced a peer's key")?;
        }
        if let (
            Some(files),
            Fault::StoreLose { .. } | Fault::StoreAlter { .. } | Fault::StoreRollBack,
        ) = (&network.files, &fault)
        {
            println!("  objects damaged: {}", files.damaged_now());
        }
        // What `medledger network status` tells the operator while it holds (item 5).
        let look = Duration::from_millis(1_500);
        tokio::time::sleep(look).await;
        let during = medledger_devnet::participation_of(&client).await;
        println!("  status: {}", during.describe());
        if let Some((peer, words)) = fault.expected_out() {
            let name = format!("peer{peer}");
            let named = during
                .out
                .iter()
                .any(|(p, why)| *p == name && words.iter().any(|w| why.contains(w)));
            if !named {
                failures.push(format!(
                    "cycle {cycle} ({fault:?}): network status did not say {name} sits out ({}): {}",
                    words.join(" or "),
                    during.describe()
                ));
            }
        }
        tokio::time::sleep(hold.saturating_sub(look)).await;
        if let Fault::DiskFull { peer } = fault {
            // Item 5: a peer that runs out of disk stops, and says why in words an operator
            // acts on. RocksDB writes into space it preallocated first, so this waits until
            // the peer needs more (bounded).
            let start = Instant::now();
            while !network.stopped_by_itself(peer) && start.elapsed() < DISK_FULL_BOUND {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            let log = std::fs::read_to_string(&network.peers[peer].log).unwrap_or_default();
            if !network.stopped_by_itself(peer) {
                println!(
                    "  peer{peer} still runs on its full disk after {} s (preallocated space)",
                    DISK_FULL_BOUND.as_secs()
                );
            } else if !log.contains("the disk holding the data directory is full") {
                failures.push(format!(
                    "cycle {cycle}: peer{peer} stopped on a full disk without saying so"
                ));
            } else {
                println!(
                    "  peer{peer} stopped on its full disk after {} ms, saying so",
                    start.elapsed().as_millis()
                );
                let now = medledger_devnet::participation_of(&client).await;
                if !now.out.iter().any(|(p, _)| *p == format!("peer{peer}")) {
                    failures.push(format!(
                        "cycle {cycle}: peer{peer} stopped, but network status said: {}",
                        now.describe()
                    ));
                }
            }
        }
        let before = network
            .standings(&client)
            .await
            .iter()
            .flatten()
            .map(|s| s.height)
            .max()
            .unwrap_or(0)
            .max(at_inject);
        let slowed_to = match fault {
            Fault::SlowDisk { peer, .. } => height_of(&network.standings(&client).await, peer),
            _ => None,
        };
        if let Some((peer, 0)) = fault.heal(&mut network).await? {
            // The throttle counted nothing. That proves the fault missing only if the peer
            // committed meanwhile (a commit writes); a peer that had nothing to write (still
            // linking up after a restart) was not slowed, and was not meant to show it.
            match (slowed_from, slowed_to) {
                (Some(from), Some(to)) if to > from => failures.push(format!(
                    "cycle {cycle}: peer{peer} committed {from}..{to} while its disk was slowed, \
                     but none of its I/O went through the throttle"
                )),
                _ => println!(
                    "  peer{peer} committed nothing while slowed (heights {slowed_from:?} to \
                     {slowed_to:?}): nothing for the throttle to slow"
                ),
            }
        }
        // What a store fault took is back: every acknowledged upload is there as uploaded.
        if let Some(files) = &network.files {
            for wrong in files.check_acknowledged().await {
                failures.push(format!(
                    "cycle {cycle} ({fault:?}), after the heal: {wrong}"
                ));
            }
        }
        let healed_at = Instant::now();
        match recovered(&network, &client, before).await {
            Some(took) => {
                println!(
                    "  healed: every peer past height {before} in {} ms",
                    took.as_millis()
                );
                recovery_ms.push((fault.kind(), took.as_millis() as u64));
                match all_take_part(&client, healed_at).await {
                    Ok(took) => {
                        println!(
                            "  every peer takes part again {} ms after the heal",
                            took.as_millis()
                        );
                        rejoin_ms.push((fault.kind(), took.as_millis() as u64));
                        // A slow return keeps its evidence even when the episode passes.
                        if took >= SLOW_RETURN {
                            keep_logs(&network, dir, &format!("slow-return-{index}-{cycle}"));
                        }
                    }
                    Err(said) => {
                        failures.push(format!(
                            "cycle {cycle} ({fault:?}): {} s after the heal network status still said: {said}",
                            RECOVERY_BOUND.as_secs()
                        ));
                        break;
                    }
                }
            }
            None => {
                failures.push(format!(
                    "cycle {cycle} ({fault:?}): not every peer committed past height {before} within {} s of the heal",
                    RECOVERY_BOUND.as_secs()
                ));
                break;
            }
        }
    }
    // The file client stops first, and the gateway's journal settles while the clinical
    // clients still make blocks: an upload's expiry is proven only by a later block.
    file_stop.store(true, Ordering::SeqCst);
    for mut task in file_tasks {
        if tokio::time::timeout(Duration::from_secs(120), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
    let unsettled = match network.files.as_mut() {
        Some(files) => files.settled().await,
        None => 0,
    };
    stop.store(true, Ordering::SeqCst);
    let mut clients = clients;
    if tokio::time::timeout(Duration::from_secs(120), &mut clients)
        .await
        .is_err()
    {
        clients.abort();
    }
    let mut store_check = None;
    if let Some(files) = network.files.as_mut() {
        if unsettled > 0 {
            failures.push(format!(
                "the gateway's journal still holds {unsettled} uploads or erasures after the clients stopped"
            ));
        }
        for item in files.refused_undamaged() {
            failures.push(format!(
                "a download of item {item} was refused as tampered, but no fault damaged it"
            ));
        }
        let refused = files
            .shared
            .refused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len();
        let done = |function: &str| {
            history
                .invocations
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|i| i.client >= CLIENTS && i.function == function)
                .filter(|i| matches!(i.outcome, Outcome::Acknowledged { .. }))
                .count()
        };
        let uploads = done("upload");
        println!(
            "  files: {uploads} uploads, {} downloads (each compared) and {} erasures acknowledged",
            done("download"),
            done("erase_patient")
        );
        if uploads == 0 {
            failures.push(
                "the file client got no upload acknowledged: the episode tested no file".into(),
            );
        }
        println!(
            "  files: {} objects damaged by faults, {refused} downloads refused as tampered or missing (each while its object was damaged)",
            files.damaged_in_all()
        );
        store_check = Some(checker::StoreCheck {
            args: files.layout.gateway_args(),
            records: files
                .shared
                .records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        });
    }
    if failures.is_empty() && !converged(&network, &client).await {
        failures
            .push("the peers did not reach one height and head once the clients stopped".into());
    }
    if let Some(lie) = &args.lie {
        let liar = lie.split(':').next().unwrap_or_default();
        let told = network.peers.iter().enumerate().any(|(i, p)| {
            format!("peer{i}") == liar
                && std::fs::read_to_string(&p.log).is_ok_and(|l| l.contains("this peer lies"))
        });
        if !told {
            failures.push(format!(
                "--lie {lie}: {liar} never said it lies (a release build, or no such peer)"
            ));
        }
    }
    network.stop_all();
    let violations =
        std::mem::take(&mut *history.violations.lock().unwrap_or_else(|p| p.into_inner()));
    let history = std::mem::take(
        &mut *history
            .invocations
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    let mut lines = String::new();
    for invocation in &history {
        lines.push_str(&serde_json::to_string(invocation)?);
        lines.push('\n');
    }
    std::fs::write(dir.join("history.jsonl"), lines)?;
    let mut verdict = checker::check(
        &network
            .peers
            .iter()
            .map(|p| p.data_dir.clone())
            .collect::<Vec<_>>(),
        &history,
        &bins.join("medledger"),
        &network.layout.genesis(),
        store_check.as_ref(),
    );
    verdict.failures.extend(failures);
    verdict.failures.extend(violations);
    Ok(Episode {
        cycles,
        recovery_ms,
        rejoin_ms,
        history,
        verdict,
    })
}

/// Unmounts what a run stopped midway (killed, or out of time) left mounted under `dir`: the
/// peers' tmpfs disks, which would keep the old episode's files (and its CA) in place.
fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    for point in mounts.lines().filter_map(|l| l.split_whitespace().nth(1)) {
        if Path::new(point).starts_with(dir) {
            let _ = std::process::Command::new("umount")
                .args(["-l", point])
                .status();
        }
    }
}

/// The 99th percentile of the acknowledged invocations' latency, in ms.
fn p99_ms(history: &[workload::Invocation]) -> u64 {
    let mut latencies: Vec<u64> = history
        .iter()
        .filter(|i| matches!(i.outcome, Outcome::Acknowledged { .. }))
        .map(|i| i.end_ms.saturating_sub(i.start_ms))
        .collect();
    latencies.sort_unstable();
    latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
}

/// Why invocations stayed unknown, most frequent first (each reason cut to 70 characters).
fn unknown_reasons(history: &[workload::Invocation]) -> Vec<(String, usize)> {
    let mut counts = BTreeMap::<String, usize>::new();
    for invocation in history {
        if let Outcome::Unknown { error } = &invocation.outcome {
            *counts.entry(error.chars().take(70).collect()).or_default() += 1;
        }
    }
    let mut reasons: Vec<(String, usize)> = counts.into_iter().collect();
    reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
    reasons
}

/// Runs the episodes not done yet; whether all passed.
async fn run(args: RunArgs) -> anyhow::Result<bool> {
    let bins = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => medledger_devnet::sibling_bin_dir(),
    };
    let root = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("medledger-faults-{}", std::process::id())),
    };
    let per = args.cycles_per_episode.max(1);
    let mut signals = StopSignals::listen();
    anyhow::ensure!(
        args.max_episodes.is_none() || args.state.is_some(),
        "--max-episodes needs --state: without it the next sitting would start again at the \
         first episode"
    );
    for kind in &args.faults {
        anyhow::ensure!(
            fault::KINDS.contains(&kind.as_str()),
            "--faults {kind}: the kinds are {}",
            fault::KINDS.join(", ")
        );
    }
    let mut progress = match &args.state {
        Some(path) if path.exists() => {
            let progress: Progress = serde_json::from_slice(&std::fs::read(path)?)
                .with_context(|| format!("reading {}", path.display()))?;
            anyhow::ensure!(
                progress.seed == args.seed && progress.cycles_per_episode == per,
                "{} is a run of seed {} in episodes of {} cycles; give another --state",
                path.display(),
                progress.seed,
                progress.cycles_per_episode
            );
            progress
        }
        _ => Progress {
            seed: args.seed,
            cycles_per_episode: per,
            ..Progress::default()
        },
    };
    progress.cycles = args.cycles;
    let episodes: Vec<u64> = match args.episode {
        Some(k) => vec![k],
        None => (progress.episodes_done..args.cycles.div_ceil(per))
            .take(usize::try_from(args.max_episodes.unwrap_or(u64::MAX)).unwrap_or(usize::MAX))
            .collect(),
    };
    for index in episodes {
        let cycles = if args.episode.is_some() {
            per
        } else {
            per.min(args.cycles - index * per)
        };
        let dir = root.join(format!("episode-{index}"));
        unmount_under(&dir);
        disk::sweep_leftovers();
        let _ = std::fs::remove_dir_all(&dir);
        println!(
            "episode {index} of seed {}: {cycles} cycles in {}",
            args.seed,
            dir.display()
        );
        // A stop signal drops the episode, whose network cleans up as it drops (processes
        // killed, disks unmounted, namespaces and bridge removed); the episode is not
        // counted, so the same command runs it again.
        let episode = tokio::select! {
            episode = run_episode(args.seed, index, cycles, &dir, &bins, &args.faults, &args) => Some(episode),
            signal = signals.recv() => {
                println!("stopped by {signal} during episode {index}");
                None
            }
        };
        let Some(episode) = episode else {
            unmount_under(&dir);
            disk::sweep_leftovers();
            println!(
                "episode {index} cleaned up and not counted; the same command continues from it"
            );
            return Ok(false);
        };
        let mut only = if args.faults.is_empty() {
            String::new()
        } else {
            format!(" --faults {}", args.faults.join(","))
        };
        if args.peers != 4 {
            only.push_str(&format!(" --peers {}", args.peers));
        }
        if let Some(lie) = &args.lie {
            only.push_str(&format!(" --lie {lie}"));
        }
        if args.objects != files::ObjectsArg::Garage {
            only.push_str(&format!(
                " --objects {}",
                format!("{:?}", args.objects).to_lowercase()
            ));
        }
        let replay = format!(
            "medledger-faults run --seed {} --cycles-per-episode {per} --episode {index}{only}",
            args.seed
        );
        let episode = match episode {
            Ok(e) => e,
            Err(e) => {
                println!(
                    "FAILED: seed {} episode {index}: {e:#}\n  replay: {replay}\n  kept: {}",
                    args.seed,
                    dir.display()
                );
                return Ok(false);
            }
        };
        let v = &episode.verdict;
        println!(
            "episode {index}: height {}, {} invocations, {} acknowledged, {} unknown ({} of them committed), p99 {} ms",
            v.height,
            episode.history.len(),
            v.acknowledged,
            v.unknown,
            v.unknown_committed,
            p99_ms(&episode.history)
        );
        for (why, count) in unknown_reasons(&episode.history).iter().take(3) {
            println!("  unknown x{count}: {why}");
        }
        if !v.failures.is_empty() {
            println!("FAILED: seed {} episode {index}:", args.seed);
            for failure in &v.failures {
                println!("  - {failure}");
            }
            println!("  replay: {replay}\n  kept: {}", dir.display());
            return Ok(false);
        }
        if !args.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        if args.episode.is_some() {
            continue;
        }
        progress.episodes_done = index + 1;
        progress.cycles_done += episode.cycles;
        progress.invocations += episode.history.len() as u64;
        progress.acknowledged += v.acknowledged;
        progress.unknown += v.unknown;
        progress.unknown_committed += v.unknown_committed;
        progress.lost += v.lost;
        progress.p99_ms.push(p99_ms(&episode.history));
        for (into, from) in [
            (&mut progress.recovery_ms, &episode.recovery_ms),
            (&mut progress.rejoin_ms, &episode.rejoin_ms),
        ] {
            for (kind, ms) in from {
                into.entry(kind.to_string()).or_default().push(*ms);
            }
        }
        if let Some(path) = &args.state {
            std::fs::write(path, serde_json::to_vec_pretty(&progress)?)?;
        }
    }
    match args.episode {
        // A replay leaves the run's figures alone (and its --state file).
        Some(index) => println!("episode {index} of seed {}: every check passed", args.seed),
        None => {
            if progress.cycles_done < args.cycles {
                println!(
                    "this sitting is over: {} of {} cycles done; the same command continues",
                    progress.cycles_done, args.cycles
                );
            }
            report(&progress);
        }
    }
    Ok(true)
}

/// SIGINT and SIGTERM, listened for from the start of a run: one that arrives between two
/// episodes (while one is cleaned up or the next is set up) is kept and stops the next.
struct StopSignals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl StopSignals {
    fn listen() -> StopSignals {
        use tokio::signal::unix::{SignalKind, signal};
        StopSignals {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// The next signal's name (never, for one no handler could be installed for: its
    /// default action stays).
    async fn recv(&mut self) -> &'static str {
        async fn next(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = next(&mut self.interrupt) => "SIGINT",
            () = next(&mut self.terminate) => "SIGTERM",
        }
    }
}

/// The run's figures, as docs/RELIABILITY.md records them.
fn report(progress: &Progress) {
    println!(
        "seed {}: {} cycles in {} episodes; {} invocations, {} acknowledged, {} unknown ({} committed), lost {}",
        progress.seed,
        progress.cycles_done,
        progress.episodes_done,
        progress.invocations,
        progress.acknowledged,
        progress.unknown,
        progress.unknown_committed,
        progress.lost
    );
    println!(
        "| fault | cycles | recovery mean | recovery max | every peer takes part again, max |"
    );
    println!("|---|---:|---:|---:|---:|");
    for kind in fault::KINDS {
        let Some(times) = progress.recovery_ms.get(kind) else {
            continue;
        };
        let mean = times.iter().sum::<u64>() / times.len().max(1) as u64;
        let max = times.iter().max().copied().unwrap_or(0);
        let rejoin = progress
            .rejoin_ms
            .get(kind)
            .and_then(|t| t.iter().max())
            .map_or_else(|| "—".to_string(), |ms| format!("{ms} ms"));
        println!(
            "| {kind} | {} | {mean} ms | {max} ms | {rejoin} |",
            times.len()
        );
    }
    let worst = progress.p99_ms.iter().max().copied().unwrap_or(0);
    println!("p99 commit latency of acknowledged invocations, worst episode: {worst} ms");
}

fn main() {
    let cli = Cli::parse();
    let Command::Run(args) = cli.command;
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    match runtime.block_on(run(args)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("medledger-faults: {e:#}");
            std::process::exit(2);
        }
    }
}
