//! `medledger-gateway serve`: the storage gateway.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use medledger_gateway::node::{GatewayConfig, run};
use medledger_gateway::service::Limits;
use medledger_gateway::store::{S3Config, S3Credentials, StoreConfig};

#[derive(Parser)]
#[command(
    name = "medledger-gateway",
    version,
    about = "The medledger storage gateway: encrypted clinical files in and out of object storage"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serves until SIGTERM or Ctrl-C.
    Serve(Serve),
}

#[derive(Parser)]
struct Serve {
    /// Wallet of the gateway's enrollment (role gateway).
    #[arg(long, env = "MEDLEDGER_GATEWAY_WALLET")]
    wallet: PathBuf,
    /// Any peer of the network, host:port.
    #[arg(long, env = "MEDLEDGER_GATEWAY_PEER", default_value = "127.0.0.1:7061")]
    peer: String,
    #[arg(
        long,
        env = "MEDLEDGER_GATEWAY_LISTEN",
        default_value = "127.0.0.1:7070"
    )]
    listen: SocketAddr,
    /// The gateway's own state (the upload journal).
    #[arg(long, env = "MEDLEDGER_GATEWAY_STATE_DIR")]
    state_dir: PathBuf,
    /// Store objects in this folder (the default store) ...
    #[arg(
        long,
        env = "MEDLEDGER_GATEWAY_OBJECTS_DIR",
        conflicts_with = "s3_endpoint"
    )]
    objects_dir: Option<PathBuf>,
    /// ... or in an S3 bucket at this endpoint (https://, or http:// on loopback).
    #[arg(long, env = "MEDLEDGER_GATEWAY_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    #[arg(long, env = "MEDLEDGER_GATEWAY_S3_BUCKET")]
    s3_bucket: Option<String>,
    #[arg(long, env = "MEDLEDGER_GATEWAY_S3_REGION", default_value = "garage")]
    s3_region: String,
    /// A 0600 file with `access_key_id = ...` and `secret_access_key = ...`; without it,
    /// AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.
    #[arg(long, env = "MEDLEDGER_GATEWAY_S3_CREDENTIALS_FILE")]
    s3_credentials_file: Option<PathBuf>,
    /// Largest object accepted, in MiB of ciphertext.
    #[arg(long, env = "MEDLEDGER_GATEWAY_MAX_FILE_MIB", default_value_t = 16 * 1024)]
    max_file_mib: u64,
    /// Transfers served at once.
    #[arg(long, env = "MEDLEDGER_GATEWAY_MAX_STREAMS", default_value_t = 16)]
    max_streams: usize,
    /// Seconds to wait for the peers to confirm a transaction.
    #[arg(long, env = "MEDLEDGER_GATEWAY_COMMIT_TIMEOUT", default_value_t = 60)]
    commit_timeout_s: u64,
    /// Seconds a client may stay silent in the middle of a transfer before it is abandoned
    /// (an upload's parts are aborted; the slot is freed).
    #[arg(long, env = "MEDLEDGER_GATEWAY_TRANSFER_IDLE", default_value_t = 60)]
    transfer_idle_s: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let _ = medledger_tls::provider();
    let Command::Serve(args) = Cli::parse().command;
    let store = match (&args.s3_endpoint, &args.objects_dir) {
        (Some(endpoint), _) => StoreConfig::S3(S3Config {
            endpoint: endpoint.clone(),
            bucket: args.s3_bucket.clone().unwrap_or_default(),
            region: args.s3_region.clone(),
            credentials: match &args.s3_credentials_file {
                Some(f) => S3Credentials::from_file(f)?,
                None => S3Credentials::from_env()?,
            },
        }),
        (None, Some(dir)) => StoreConfig::Local { root: dir.clone() },
        (None, None) => StoreConfig::Local {
            root: args.state_dir.join("objects"),
        },
    };
    let config = GatewayConfig {
        wallet: args.wallet,
        peer: args.peer,
        listen: args.listen,
        state_dir: args.state_dir,
        store,
        limits: Limits {
            max_file_size: args.max_file_mib << 20,
            max_streams: args.max_streams.max(1),
            commit_timeout: Duration::from_secs(args.commit_timeout_s.max(1)),
            transfer_idle: Duration::from_secs(args.transfer_idle_s.max(1)),
        },
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(
            config,
            |addr| {
                // Tests and scripts read the bound port from this line.
                println!("medledger-gateway listening on {addr}");
            },
            async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            },
        ))
}
