//! `medledger-load`: a closed-loop load generator against a running network.
//!
//! It registers and enrolls `--clients` patient identities (with the admin wallet), then each
//! client registers its patient record and submits grants one after another, each waiting for
//! f+1 matching receipts, until `--transactions` have committed in total. It reports committed
//! transactions per second, commit latency percentiles as the client sees them, and the
//! status of every transaction.
//!
//! ```sh
//! scripts/devnet up
//! cargo run --release -p medledger-bench --bin medledger-load -- \
//!     --admin-wallet .medledger/wallets/admin --clients 8 --transactions 2000
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use medledger_client::ca::{CaClient, TlsIdentity};
use medledger_client::peer::PeerSet;
use medledger_client::wallet::Wallet;
use medledger_proto::v1;
use prost::Message;
use rand_core::RngCore;

#[derive(Parser)]
#[command(
    name = "medledger-load",
    about = "Closed-loop load against a medledger network"
)]
struct Args {
    /// An administrator's wallet, to register the load's patient identities.
    #[arg(long, default_value = ".medledger/wallets/admin")]
    admin_wallet: PathBuf,
    /// Any peer of the network.
    #[arg(long, default_value = "127.0.0.1:7061")]
    peer: String,
    /// Concurrent clients, each with its own identity and one transaction in flight.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Transactions to commit in total.
    #[arg(long, default_value_t = 1000)]
    transactions: usize,
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

async fn enroll_clients(args: &Args, dir: &std::path::Path) -> anyhow::Result<Vec<Wallet>> {
    let admin = Wallet::open(&args.admin_wallet)?;
    let root = admin.root()?.der().to_vec();
    let mut ca = CaClient::connect(&admin.info.ca_url, &root, TlsIdentity::Wallet(&admin)).await?;
    let mut tag = [0u8; 4];
    rand_core::OsRng.fill_bytes(&mut tag);
    let mut wallets = Vec::new();
    for i in 0..args.clients {
        let name = format!("load-{}-{i}", hex::encode(tag));
        let registered = ca
            .register(v1::RegisterRequest {
                name: name.clone(),
                role: "patient".into(),
                attributes: vec![],
                max_enrollments: 1,
            })
            .await?;
        let wallet = medledger_client::enroll(
            &admin.info.ca_url,
            &root,
            &name,
            &registered.secret,
            &dir.join(&name),
        )
        .await?;
        wallets.push(wallet);
    }
    Ok(wallets)
}

struct ClientReport {
    latencies: Vec<Duration>,
    statuses: BTreeMap<String, usize>,
}

async fn client(peers: Arc<PeerSet>, count: usize) -> anyhow::Result<ClientReport> {
    let mut pseudonym = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut pseudonym);
    let mut report = ClientReport {
        latencies: Vec::with_capacity(count),
        statuses: BTreeMap::new(),
    };
    for i in 0..count {
        let (function, args) = if i == 0 {
            let args = v1::RegisterPatientArgs {
                pseudonym: pseudonym.to_vec(),
                category_keys: vec![v1::CategoryKey {
                    category: "lab-results".into(),
                    public_key: vec![7; 32],
                    ..Default::default()
                }],
            };
            ("register_patient", args.encode_to_vec())
        } else {
            let args = v1::GrantArgs {
                pseudonym: pseudonym.to_vec(),
                grantee: format!("dr.{}", i % 50),
                category: "lab-results".into(),
                rights: vec![v1::Right::Write as i32],
                from: now_s() - 60,
                until: now_s() + 86_400,
                ..Default::default()
            };
            ("grant", args.encode_to_vec())
        };
        let start = Instant::now();
        let committed = peers.submit(function, args).await?;
        report.latencies.push(start.elapsed());
        *report
            .statuses
            .entry(committed.status.as_str_name().to_string())
            .or_default() += 1;
    }
    Ok(report)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.clients > 0 && args.transactions >= args.clients,
        "need at least one transaction per client"
    );
    let dir = std::env::temp_dir().join(format!("medledger-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let wallets = enroll_clients(&args, &dir).await.context(
        "registering the load's identities (is the CA up, and is --admin-wallet an admin?)",
    )?;
    let mut sets = Vec::new();
    for w in &wallets {
        sets.push(Arc::new(PeerSet::connect(w, &args.peer).await?));
    }
    println!(
        "{} clients, {} transactions, {} peers (receipts needed: {})",
        args.clients,
        args.transactions,
        sets[0].n(),
        sets[0].receipts_needed()
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, peers) in sets.into_iter().enumerate() {
        let count =
            args.transactions / args.clients + usize::from(i < args.transactions % args.clients);
        tasks.spawn(client(peers, count));
    }
    let mut latencies = Vec::new();
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let report = done??;
        latencies.extend(report.latencies);
        for (k, v) in report.statuses {
            *statuses.entry(k).or_default() += v;
        }
    }
    let elapsed = started.elapsed();
    latencies.sort();
    println!(
        "committed {} in {:.2} s: {:.0} tx/s",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "commit latency (f+1 receipts): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
    for (status, count) in statuses {
        println!("  {status}: {count}");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
