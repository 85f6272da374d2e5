//! `medledger-peer`: a medledger node. `genesis` writes the network's genesis block; `serve`
//! runs a peer; `blocks` lists a (stopped or running) peer's blocks from its data directory.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use medledger_peer::config::{FileConfig, PeerConfig};
use medledger_peer::genesis::{self, GenesisPeerSpec};
use medledger_peer::ledger::Ledger;
use medledger_peer::{block, node};

#[derive(Parser)]
#[command(
    name = "medledger-peer",
    version,
    about = "A medledger peer: PBFT, the EHR chaincode and the ledger"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Writes a genesis block: the CA root, the peers (in replica order) and consensus
    /// parameters. Give every peer the same file.
    Genesis {
        /// The membership CA's root certificate (PEM).
        #[arg(long)]
        ca_root: PathBuf,
        /// A peer as NAME=CERT.pem@HOST:PORT (its enrollment certificate, role peer, and
        /// where it listens). Repeat for each peer: 4, 7, 10, ...
        #[arg(long = "peer", required = true)]
        peers: Vec<String>,
        #[arg(long, default_value = "medledger")]
        network_name: String,
        /// Most transactions per block.
        #[arg(long)]
        max_batch: Option<u32>,
        /// The primary proposes a partial block after this many milliseconds.
        #[arg(long)]
        batch_timeout_ms: Option<u64>,
        /// A backup suspects the primary after a request waits this long.
        #[arg(long)]
        request_timeout_ms: Option<u64>,
        /// The longest a transaction may wait to be ordered, in ms (10,000 to 3,600,000;
        /// default 300,000): it is refused as EXPIRED after its expiry.
        #[arg(long)]
        max_tx_lifetime_ms: Option<u64>,
        /// An admin who may approve configuration changes: their enrollment certificate
        /// (PEM, role admin). Repeat for each (at most 32). Without any, the network's
        /// configuration can never change.
        #[arg(long = "admin")]
        admins: Vec<PathBuf>,
        /// Approvals a configuration change needs (default: a majority of the admins).
        #[arg(long)]
        admin_threshold: Option<u32>,
        /// An auditor who, with the peers, may read the ledger's blocks and every block's
        /// events: their enrollment certificate (PEM, role auditor). Repeat for each (at
        /// most 32). Without any, only the peers read blocks until a configuration names
        /// auditors.
        #[arg(long = "auditor")]
        auditors: Vec<PathBuf>,
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
    /// Runs the peer until SIGTERM or Ctrl-C.
    Serve {
        /// A TOML configuration file (see docs/peer.md).
        #[arg(long, env = "MEDLEDGER_PEER_CONFIG")]
        config: Option<PathBuf>,
        /// Wallet directory of the peer's enrollment (role peer).
        #[arg(long, env = "MEDLEDGER_PEER_WALLET")]
        wallet: Option<PathBuf>,
        #[arg(long, env = "MEDLEDGER_PEER_GENESIS")]
        genesis: Option<PathBuf>,
        #[arg(long, env = "MEDLEDGER_PEER_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Default: this peer's address in the genesis block.
        #[arg(long, env = "MEDLEDGER_PEER_LISTEN")]
        listen: Option<SocketAddr>,
        #[arg(long, env = "MEDLEDGER_PEER_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
        /// The membership CA (https://HOST:PORT) whose revocations this peer puts on the
        /// ledger by itself. Default: the CA the wallet enrolled with (its wallet.json).
        #[arg(long, env = "MEDLEDGER_PEER_CA_URL")]
        ca_url: Option<String>,
        /// A peer to catch up from (NAME@HOST:PORT, or HOST:PORT; repeat for more) while
        /// this peer is not one of the replicas in force: a peer the admins are adding,
        /// started before or after they submit the change (docs/adr/0011). It fetches and
        /// checks every block, and takes part from the block that adds it once one of these
        /// peers holds the same block. With NAME, only the peer enrolled as NAME is believed
        /// at that address.
        #[arg(long = "join", env = "MEDLEDGER_PEER_JOIN", value_delimiter = ',')]
        join: Vec<String>,
        /// How often (seconds) to ask the other peers for committed private values this
        /// peer lacks (docs/adr/0017 §7); 0: never. Default 5.
        #[arg(long, env = "MEDLEDGER_PEER_RECONCILE_SECONDS")]
        reconcile_seconds: Option<u64>,
    },
    /// Lists blocks from a data directory: number, header hash, state root, transactions.
    Blocks {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
}

/// The admin policy of a new genesis: each certificate an admin of the CA `root_der`, valid
/// now (`now_s`); `threshold` of them, or a majority.
fn admin_policy(
    root_der: &[u8],
    certificates: &[PathBuf],
    threshold: Option<u32>,
    now_s: i64,
) -> anyhow::Result<Option<medledger_proto::v1::AdminPolicy>> {
    if certificates.is_empty() {
        anyhow::ensure!(threshold.is_none(), "--admin-threshold needs --admin");
        return Ok(None);
    }
    let keys = enrolled(root_der, certificates, medledger_crypto::Role::Admin, now_s)?
        .into_iter()
        .map(|(identity, _)| identity.signing_key)
        .collect::<Vec<_>>();
    let mut policy = medledger_execution::config::majority_policy(&keys);
    if let Some(t) = threshold {
        policy.threshold = t;
    }
    medledger_execution::config::check_policy(&policy)?;
    Ok(Some(policy))
}

/// The enrollment certificates in `certificates` (PEM files), each valid now under
/// `root_der` and of `role`: each identity and its DER.
fn enrolled(
    root_der: &[u8],
    certificates: &[PathBuf],
    role: medledger_crypto::Role,
    now_s: i64,
) -> anyhow::Result<Vec<(medledger_crypto::EnrolledIdentity, Vec<u8>)>> {
    let root = medledger_crypto::RootCertificate::from_der(root_der)?;
    let mut keys = Vec::new();
    for path in certificates {
        let pem_text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let der = pem::parse(&pem_text)
            .with_context(|| format!("{} is not PEM", path.display()))?
            .into_contents();
        let identity = medledger_crypto::validate_enrollment_certificate(
            &der,
            &root,
            now_s,
            &std::collections::BTreeSet::new(),
        )
        .with_context(|| format!("--{role} {}", path.display()))?;
        anyhow::ensure!(
            identity.role == role,
            "--{role} {}: {} is a {}, not an {role}",
            path.display(),
            identity.name,
            identity.role
        );
        keys.push((identity, der));
    }
    Ok(keys)
}

fn main() -> anyhow::Result<()> {
    let _ = medledger_tls::provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Genesis {
            ca_root,
            peers,
            network_name,
            max_batch,
            batch_timeout_ms,
            request_timeout_ms,
            max_tx_lifetime_ms,
            admins,
            admin_threshold,
            auditors,
            output,
        } => {
            let root_pem = std::fs::read_to_string(&ca_root)
                .with_context(|| format!("reading {}", ca_root.display()))?;
            let root_der = pem::parse(&root_pem)
                .with_context(|| format!("{} is not PEM", ca_root.display()))?
                .into_contents();
            let mut specs = Vec::new();
            for spec in &peers {
                let (name, rest) = spec.split_once('=').with_context(|| {
                    format!("--peer {spec:?}: expected NAME=CERT.pem@HOST:PORT")
                })?;
                let (cert, address) = rest.rsplit_once('@').with_context(|| {
                    format!("--peer {spec:?}: expected NAME=CERT.pem@HOST:PORT")
                })?;
                let pem_text =
                    std::fs::read_to_string(cert).with_context(|| format!("reading {cert}"))?;
                specs.push(GenesisPeerSpec {
                    name: name.to_string(),
                    certificate_der: pem::parse(&pem_text)
                        .with_context(|| format!("{cert} is not PEM"))?
                        .into_contents(),
                    address: address.to_string(),
                });
            }
            let mut parameters = genesis::default_parameters();
            if let Some(m) = max_batch {
                parameters.max_batch_requests = m;
            }
            if let Some(t) = batch_timeout_ms {
                parameters.batch_timeout_ms = t;
            }
            if let Some(t) = request_timeout_ms {
                parameters.request_timeout_ms = t;
            }
            if let Some(t) = max_tx_lifetime_ms {
                parameters.max_tx_lifetime_ms = t;
            }
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as i64;
            let admin_policy = admin_policy(&root_der, &admins, admin_threshold, now_ms / 1000)?;
            let auditors = enrolled(
                &root_der,
                &auditors,
                medledger_crypto::Role::Auditor,
                now_ms / 1000,
            )?
            .into_iter()
            .map(|(_, der)| der)
            .collect();
            let g = genesis::build(
                &network_name,
                &root_der,
                specs,
                parameters,
                admin_policy,
                auditors,
                now_ms,
            )?;
            std::fs::write(&output, g.encode())
                .with_context(|| format!("writing {}", output.display()))?;
            println!("Wrote the genesis block to {}", output.display());
            println!("  network id: {}", hex::encode(g.network_id));
            for p in &g.config.peers {
                println!("  replica {}: {} at {}", p.replica, p.name, p.address);
            }
            Ok(())
        }
        Command::Serve {
            config,
            wallet,
            genesis,
            data_dir,
            listen,
            metrics_listen,
            ca_url,
            join,
            reconcile_seconds,
        } => {
            let file = match config {
                Some(path) => FileConfig::read(&path)?,
                None => FileConfig::default(),
            };
            let flags = FileConfig {
                wallet,
                genesis,
                data_dir,
                listen,
                metrics_listen,
                ca_url,
                join: (!join.is_empty()).then_some(join),
                reconcile_seconds,
            };
            let config = PeerConfig::resolve(flags, file)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(node::run(
                config,
                |addr| {
                    println!("medledger-peer listening on {addr}");
                    tracing::info!(%addr, "listening");
                },
                shutdown_signal(),
            ))
        }
        Command::Blocks { data_dir, from } => {
            let ledger = Ledger::open_read_only(&data_dir.join("ledger"))?;
            for number in from..=ledger.height() {
                let Some(b) = ledger.block(number)? else {
                    break;
                };
                let h = b.header.as_ref().context("block without header")?;
                let valid = b
                    .results
                    .iter()
                    .filter(|r| r.status == medledger_proto::v1::TxStatus::Valid as i32)
                    .count();
                println!(
                    "{number} {} state={} txs={} valid={} view={} time_ms={}",
                    hex::encode(block::header_hash(h)),
                    hex::encode(&h.state_root),
                    b.envelopes.len(),
                    valid,
                    b.certificate.as_ref().map_or(0, |c| c.view),
                    h.time_ms
                );
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
}
