//! The faults one cycle injects, drawn from a seed: partitions (two against two, the
//! primary cut off from the other peers, one peer cut off, one-way), a share of packets
//! dropped, kill -9 of one peer or of all, a paused (SIGSTOP) peer, one peer's disk full,
//! one peer's clock skewed or jumped (`MEDLEDGER_FAULT_CLOCK_FILE`), a bit flipped in one
//! peer's write-ahead log or table files, the storage gateway killed mid-upload, and an object store that
//! loses, rolls back or alters objects ([`crate::files`]), and one peer's disk slowed
//! ([`crate::disk`]). Each is undone by [`Fault::heal`]:
//! rules flushed, clocks true, killed processes restarted, paused ones resumed, objects put
//! back.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::files::Damage;
use crate::network::Network;

#[derive(Clone, Debug)]
pub enum Fault {
    /// The peers in two halves that cannot reach each other.
    Split { left: Vec<usize>, right: Vec<usize> },
    /// The primary of the current view cut off from every other peer (clients still reach
    /// it).
    IsolatePrimary { primary: usize },
    /// One peer cut off from every other peer and from the clients.
    Isolate { peer: usize },
    /// `peer` receives nothing from `from`, but sends to them.
    OneWay { peer: usize, from: Vec<usize> },
    /// Every peer drops `percent`% of what the other peers send it.
    Drop { percent: u32 },
    /// kill -9 of one peer, restarted at the heal.
    Kill { peer: usize },
    /// kill -9 of every peer at once, all restarted at the heal.
    KillAll,
    /// SIGSTOP of one peer, SIGCONT at the heal.
    Pause { peer: usize },
    /// The disk under one peer's data directory filled to the last byte; freed at the heal,
    /// and the peer started again if it stopped.
    DiskFull { peer: usize },
    /// One peer's wall clock moved by `offset_s` seconds (beyond the allowed skew of 2 s;
    /// the peer's consensus time, timers and reported clock, not its certificate checks),
    /// back at the heal.
    Clock { peer: usize, offset_s: i64 },
    /// kill -9 of one peer and one byte flipped in its RocksDB write-ahead log, or with
    /// `table` in its table files, at `at_per_mille` of their length; at the heal the peer
    /// must refuse to start, saying its ledger is corrupt; it is then moved aside, as the
    /// message says, and the peer catches up from the others (issue 18 item 5).
    Corrupt {
        peer: usize,
        at_per_mille: u32,
        table: bool,
    },
    /// kill -9 of the storage gateway (uploads, downloads and erasures in flight); started
    /// again at the heal, its journal settles what was in flight.
    GatewayKill,
    /// The object store loses `count` objects; put back at the heal.
    StoreLose { count: usize, pick: u64 },
    /// The object store changes a byte of `count` objects; put back at the heal.
    StoreAlter { count: usize, pick: u64 },
    /// The object store goes back to how it was when the cycle began (what was written since
    /// is gone); put back at the heal.
    StoreRollBack,
    /// One peer's disk throttled to `kib_per_s` KiB/s and `iops` operations a second, each
    /// way (its reads, writes and syncs); full speed at the heal.
    SlowDisk {
        peer: usize,
        kib_per_s: u64,
        iops: u64,
    },
    /// kill -9 of one peer, a new signing key for it from the CA (its old certificate
    /// revoked as superseded), and the configuration change that replaces it (removed with
    /// its old key, added with the new one at the same address) approved by both admins and
    /// ordered by the others; at the heal the peer starts again with `--join` and catches
    /// up. What an operator does with `medledger network rekey-peer`.
    Rekey { peer: usize },
}

/// The kinds that need the gateway and the object store (`--objects garage` or `local`).
pub const FILE_KINDS: [&str; 4] = [
    "gateway-kill",
    "store-lose",
    "store-alter",
    "store-rollback",
];

/// Every kind, for the report: the first [`DRAWN`] are drawn when no kind is named; the
/// others only when named (so the draws of a seed stay what they were before they existed).
pub const KINDS: [&str; 17] = [
    "split",
    "isolate-primary",
    "isolate",
    "one-way",
    "drop",
    "kill",
    "kill-all",
    "pause",
    "clock",
    "disk-full",
    "corrupt",
    "gateway-kill",
    "store-lose",
    "store-alter",
    "store-rollback",
    "slow-disk",
    "rekey",
];

/// How many of [`KINDS`] are drawn when none is named.
pub const DRAWN: usize = 16;

impl Fault {
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Split { .. } => KINDS[0],
            Fault::IsolatePrimary { .. } => KINDS[1],
            Fault::Isolate { .. } => KINDS[2],
            Fault::OneWay { .. } => KINDS[3],
            Fault::Drop { .. } => KINDS[4],
            Fault::Kill { .. } => KINDS[5],
            Fault::KillAll => KINDS[6],
            Fault::Pause { .. } => KINDS[7],
            Fault::Clock { .. } => KINDS[8],
            Fault::DiskFull { .. } => KINDS[9],
            Fault::Corrupt { .. } => KINDS[10],
            Fault::GatewayKill => KINDS[11],
            Fault::StoreLose { .. } => KINDS[12],
            Fault::StoreAlter { .. } => KINDS[13],
            Fault::StoreRollBack => KINDS[14],
            Fault::SlowDisk { .. } => KINDS[15],
            Fault::Rekey { .. } => KINDS[16],
        }
    }

    /// A fault of the first [`DRAWN`] kinds for `n` peers whose primary is `primary`.
    pub fn draw(rng: &mut impl Rng, n: usize, primary: usize) -> Fault {
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(rng);
        match rng.gen_range(0..DRAWN) {
            0 => {
                let cut = rng.gen_range(1..n);
                let (left, right) = order.split_at(cut);
                Fault::Split {
                    left: left.to_vec(),
                    right: right.to_vec(),
                }
            }
            1 => Fault::IsolatePrimary { primary },
            2 => Fault::Isolate { peer: order[0] },
            3 => {
                let count = rng.gen_range(1..n);
                Fault::OneWay {
                    peer: order[0],
                    from: order[1..=count].to_vec(),
                }
            }
            4 => Fault::Drop {
                percent: rng.gen_range(5..40),
            },
            5 => Fault::Kill { peer: order[0] },
            6 => Fault::KillAll,
            7 => Fault::Pause { peer: order[0] },
            9 => Fault::DiskFull { peer: order[0] },
            10 => Fault::Corrupt {
                peer: order[0],
                at_per_mille: rng.gen_range(100..900),
                table: rng.gen_bool(0.5),
            },
            11 => Fault::GatewayKill,
            12 => Fault::StoreLose {
                count: rng.gen_range(1..4),
                pick: rng.r#gen(),
            },
            13 => Fault::StoreAlter {
                count: rng.gen_range(1..4),
                pick: rng.r#gen(),
            },
            14 => Fault::StoreRollBack,
            15 => Fault::SlowDisk {
                peer: order[0],
                kib_per_s: [64, 256, 1024][rng.gen_range(0..3)],
                iops: [10, 50, 200][rng.gen_range(0..3)],
            },
            _ => Fault::Clock {
                peer: order[0],
                offset_s: [5, -5, 60, -60, -600][rng.gen_range(0..5)],
            },
        }
    }

    /// [`Fault::draw`], of the kinds named in `kinds` only (the first [`DRAWN`] when
    /// empty); `rekey`, when named, one time in as many as there are kinds named.
    pub fn draw_of(rng: &mut impl Rng, n: usize, primary: usize, kinds: &[String]) -> Fault {
        if kinds.iter().any(|k| k == KINDS[16]) && rng.gen_range(0..kinds.len()) == 0 {
            return Fault::Rekey {
                peer: rng.gen_range(0..n),
            };
        }
        loop {
            let fault = Fault::draw(rng, n, primary);
            if kinds.is_empty() || kinds.iter().any(|k| k == fault.kind()) {
                return fault;
            }
        }
    }

    /// The peer that `medledger network status` must show as not taking part while this
    /// fault holds, and the words one of which its reason must hold.
    pub fn expected_out(&self) -> Option<(usize, &'static [&'static str])> {
        match self {
            Fault::Kill { peer }
            | Fault::Pause { peer }
            | Fault::Isolate { peer }
            | Fault::Corrupt { peer, .. } => Some((*peer, &["not answering"])),
            Fault::Clock { peer, .. } => Some((*peer, &["clock"])),
            _ => None,
        }
    }

    /// Does it to `network`.
    ///
    /// # Errors
    /// A rule could not be set.
    pub async fn inject(&self, network: &mut Network) -> anyhow::Result<()> {
        let fabric = &network.fabric;
        let addresses =
            |peers: &[usize]| -> Vec<String> { peers.iter().map(|&i| fabric.address(i)).collect() };
        let others = |peer: usize| -> Vec<usize> { (0..fabric.n).filter(|&i| i != peer).collect() };
        match self {
            Fault::Split { left, right } => {
                for &i in left {
                    fabric.block(i, &addresses(right), &addresses(right))?;
                }
                for &i in right {
                    fabric.block(i, &addresses(left), &addresses(left))?;
                }
            }
            Fault::IsolatePrimary { primary } => {
                let rest = addresses(&others(*primary));
                fabric.block(*primary, &rest, &rest)?;
                for i in others(*primary) {
                    let p = addresses(&[*primary]);
                    fabric.block(i, &p, &p)?;
                }
            }
            Fault::Isolate { peer } => {
                let mut rest = addresses(&others(*peer));
                rest.push(fabric.host_address());
                fabric.block(*peer, &rest, &rest)?;
            }
            Fault::OneWay { peer, from } => fabric.block(*peer, &addresses(from), &[])?,
            Fault::Drop { percent } => {
                for i in 0..fabric.n {
                    fabric.drop_share(i, *percent)?;
                }
            }
            Fault::Kill { peer } => network.kill(*peer),
            Fault::KillAll => {
                for i in 0..network.peers.len() {
                    network.kill(i);
                }
            }
            Fault::Pause { peer } => network.pause(*peer),
            Fault::Clock { peer, offset_s } => network.set_clock(*peer, *offset_s)?,
            Fault::DiskFull { peer } => network.fill_disk(*peer)?,
            Fault::Corrupt {
                peer,
                at_per_mille,
                table,
            } => {
                network.kill(*peer);
                let damaged = network.corrupt_ledger(*peer, *at_per_mille, *table)?;
                network.damaged = Some(damaged);
            }
            Fault::GatewayKill => {
                if let Some(files) = network.files.as_mut() {
                    files.gateway.kill();
                }
            }
            Fault::StoreLose { count, pick } => {
                network
                    .damage(Damage::Lose { count: *count }, *pick)
                    .await?;
            }
            Fault::StoreAlter { count, pick } => {
                network
                    .damage(Damage::Alter { count: *count }, *pick)
                    .await?;
            }
            Fault::StoreRollBack => network.damage(Damage::RollBack, 0).await?,
            Fault::SlowDisk {
                peer,
                kib_per_s,
                iops,
            } => network.slow_disk(*peer, kib_per_s.saturating_mul(1024), *iops)?,
            Fault::Rekey { peer } => network.rekey(*peer).await?,
        }
        Ok(())
    }

    /// Undoes it: every rule flushed, every peer running and resumed. Returns, for a slowed
    /// disk, the peer and the bytes of block I/O that went through its throttle (what
    /// shows that the fault took place, when the peer had anything to write).
    ///
    /// # Errors
    /// A rule could not be flushed or a peer did not start again.
    pub async fn heal(&self, network: &mut Network) -> anyhow::Result<Option<(usize, u64)>> {
        let mut throttled = None;
        network.fabric.heal()?;
        if let Some(files) = network.files.as_mut() {
            files.restore().await?;
            files.gateway.start()?;
        }
        for i in 0..network.peers.len() {
            if let Some(bytes) = network.unslow_disk(i) {
                println!("  peer{i} did {bytes} bytes of block I/O through its throttle");
                throttled = Some((i, bytes));
            }
            network.set_clock(i, 0)?;
            network.free_disk(i);
            network.resume(i);
            match self {
                Fault::Corrupt { peer, .. } if *peer == i => match network.damaged.take() {
                    Some(damaged) => network.restart_corrupt(i, &damaged)?,
                    None => network.restart(i)?,
                },
                _ => network.restart(i)?,
            }
        }
        Ok(throttled)
    }
}
