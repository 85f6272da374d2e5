//! `medledger`: the command line for every medledger role: so far the CA and identity
//! commands and the ledger's state.
//!
//! ```text
//! medledger [--json] [--wallet DIR] [--ca URL] [--ca-root FILE] [--peer HOST:PORT] <command>
//!   ca-info                      the CA's root fingerprint and settings
//!   enroll --name N --secret S   create keys here, get a certificate, write the wallet
//!   reenroll [--new-signing-key | --key-compromise]   renew the wallet's certificate
//!   whoami                       what the wallet's certificate says
//!   admin register --name N --role R [--attr k=v[@FROM..UNTIL]]... [--max-enrollments K]
//!   admin revoke (--name N | --serial S) [--reason R]
//!   admin identities | admin crl [--out FILE] | admin revocations [--since N]
//!   admin sync-revocations       put the CA's revocations on the ledger (with --peer)
//!   ledger info | ledger blocks [--from N] [--limit K]
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use medledger_proto::v1;
use medledger_sdk::ca::{CaClient, TlsIdentity};
use medledger_sdk::error::ClientError;
use medledger_sdk::private_data::GatheredReason;
use medledger_sdk::wallet::{Wallet, default_wallet_dir, pem_decode, pem_encode, wallets_home};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

mod config_cli;
mod demo;
mod network_cli;
mod proof_cli;
mod records_cli;
mod verify;

/// The line saying which network a wallet is pinned to (`network`: its id), or that it is not.
fn describe_pin(network: Option<&[u8; 32]>) -> String {
    match network {
        Some(id) => format!("network {} (pinned)", hex::encode(id)),
        None => "network: not pinned (pin it with `medledger network pin --genesis FILE`)".into(),
    }
}

const DEFAULT_CA_URL: &str = "https://localhost:7054";
/// The local network's peers (`medledger network up`), tried in turn: any one that answers
/// serves, then the peers the wallet's pinned genesis names.
const DEFAULT_PEER: &str = "127.0.0.1:7061,127.0.0.1:7062,127.0.0.1:7063,127.0.0.1:7064";

#[derive(Parser)]
#[command(
    name = "medledger",
    version,
    about = "medledger: a permissioned ledger for electronic health records"
)]
struct Cli {
    /// Print JSON instead of human text.
    #[arg(long, global = true)]
    json: bool,
    /// The wallet (identity) to act as. Default: the only wallet in ~/.medledger, or
    /// ~/.medledger/<name> for `enroll`.
    #[arg(long, global = true, env = "MEDLEDGER_WALLET")]
    wallet: Option<PathBuf>,
    /// The CA's address. Default: the one the wallet enrolled with, else https://localhost:7054.
    #[arg(long, global = true, env = "MEDLEDGER_CA")]
    ca: Option<String>,
    /// The CA root certificate to trust (needed to enroll; afterwards the wallet has it).
    #[arg(long, global = true, env = "MEDLEDGER_CA_ROOT")]
    ca_root: Option<PathBuf>,
    /// Peers of the network to try first (host:port, comma-separated); any one that answers
    /// serves if it serves the genesis the wallet is pinned to; then the peers that genesis
    /// names are tried.
    /// Default: the local network's four peers, 127.0.0.1:7061-7064.
    #[arg(long, global = true, env = "MEDLEDGER_PEER")]
    peer: Option<String>,
    /// The storage gateway (host:port). Default: 127.0.0.1:7070, the local network's.
    #[arg(long, global = true, env = "MEDLEDGER_GATEWAY")]
    gateway: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the CA's root fingerprint and settings.
    CaInfo,
    /// Enroll an identity registered by an administrator; writes a new wallet.
    Enroll {
        #[arg(long)]
        name: String,
        /// The one-time enrollment secret from `medledger admin register`.
        #[arg(
            long,
            env = "MEDLEDGER_ENROLLMENT_SECRET",
            hide_env_values = true,
            allow_hyphen_values = true
        )]
        secret: String,
        /// The network's genesis block (from its administrator): the wallet is pinned to
        /// that network and talks to no other. Without it, pin later with `network pin`.
        #[arg(long, env = "MEDLEDGER_GENESIS")]
        genesis: Option<PathBuf>,
    },
    /// Renew the wallet's certificate (before it expires). Keeps the signing key and the
    /// identity's grants and records; the encryption key is new and the old one stays in the
    /// wallet's key ring, so what was shared with it still opens.
    Reenroll {
        /// A new signing key too; the CA revokes the earlier certificates (superseded).
        #[arg(long)]
        new_signing_key: bool,
        /// The wallet's keys may be in other hands: new keys, every earlier certificate
        /// revoked for key compromise, the key ring emptied.
        #[arg(long, conflicts_with = "new_signing_key")]
        key_compromise: bool,
    },
    /// Show who the wallet's certificate says you are.
    Whoami,
    /// Administrator commands.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// The ledger: its peers, height and blocks.
    #[command(subcommand)]
    Ledger(LedgerCommand),
    /// A patient's record: keys, registration, grants.
    #[command(subcommand)]
    Patient(records_cli::PatientCommand),
    /// Clinical files: upload (encrypted here) and download (checked against the ledger).
    #[command(subcommand)]
    Clinician(records_cli::ClinicianCommand),
    /// Research: studies and the data shared into them.
    #[command(subcommand)]
    Researcher(records_cli::ResearcherCommand),
    /// Run the oncology scenario against the local network, narrated (needs `network up`).
    Demo {
        /// The network's directory (as given to `network up`).
        #[arg(long, env = "MEDLEDGER_NETWORK_DIR")]
        dir: Option<PathBuf>,
    },
    /// A local network on loopback: CA, peers, gateway.
    #[command(subcommand)]
    Network(network_cli::NetworkCommand),
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Every peer's height, view and connections, as each peer reports it.
    Info,
    /// Block headers: number, hash, transactions and their statuses, for the ledger's
    /// readers (peers, named auditors). Only blocks whose every outcome is proven by f+1
    /// peers' votes are listed; the listing says where it stopped.
    Blocks {
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Blocks at most (1 to 100, what a peer serves in one call): the listing says from
        /// where to go on.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Emergency accesses (break the glass) in blocks `from..`, each reason opened with this
    /// wallet's keys: an auditor the configuration names reads them all. Only blocks whose
    /// every outcome is proven by f+1 peers' votes are listed.
    Emergencies {
        #[arg(long, default_value_t = 1)]
        from: u64,
        /// Blocks looked through at most (1 to 100, what a peer serves in one call): the
        /// listing says from where to go on.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=100))]
        limit: u32,
    },
    /// Check every block (links, tx_root, commit certificates, signatures, state roots by
    /// re-execution) and every stored object against the ledger; exits 1 on any failure.
    Verify(network_cli::VerifyArgs),
    /// Write a transaction's outcome with its commit proof to a file, for anyone holding the
    /// genesis to check offline.
    Proof(proof_cli::ProofArgs),
    /// Check a proof file offline against the genesis (default: the wallet's pinned one);
    /// exits 1 unless it proves the outcome it names.
    CheckProof {
        file: PathBuf,
        #[arg(long)]
        genesis: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Register an identity and print its one-time enrollment secret.
    Register(RegisterArgs),
    /// Revoke every certificate of a name, or one certificate by serial (with, for every
    /// reason but superseded, the other live certificates of its name with the same key).
    Revoke {
        #[arg(long, conflicts_with = "serial", required_unless_present = "serial")]
        name: Option<String>,
        #[arg(long)]
        serial: Option<String>,
        #[arg(long, value_enum, default_value = "unspecified")]
        reason: Reason,
    },
    /// List registered identities and their certificates.
    Identities,
    /// Fetch the CA's current CRL (PEM).
    Crl {
        /// Write the CRL here instead of printing a summary.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Put every CA revocation the ledger lacks on the ledger (needs --peer), so that peers
    /// refuse the revoked certificates from that block on.
    SyncRevocations,
    /// List signed revocation records after a sequence number.
    Revocations {
        #[arg(long, default_value_t = 0)]
        since: u64,
    },
    /// Change the network's configuration: propose, approve (each admin), submit.
    #[command(subcommand)]
    Config(config_cli::ConfigCommand),
}

#[derive(Args)]
struct RegisterArgs {
    #[arg(long)]
    name: String,
    /// admin, peer, clinician, patient, researcher or auditor.
    #[arg(long)]
    role: String,
    /// key=value, optionally valid only in a window: key=value@FROM..UNTIL with RFC 3339
    /// times or dates (2026-01-01); either end may be left open. Repeat for several.
    #[arg(long = "attr")]
    attributes: Vec<String>,
    /// How many times the secret may be used to enroll.
    #[arg(long, default_value_t = 1)]
    max_enrollments: u32,
}

#[derive(Clone, Copy, ValueEnum)]
enum Reason {
    Unspecified,
    KeyCompromise,
    AffiliationChanged,
    Superseded,
    CessationOfOperation,
    PrivilegeWithdrawn,
}

impl From<Reason> for v1::RevocationReason {
    fn from(reason: Reason) -> Self {
        match reason {
            Reason::Unspecified => v1::RevocationReason::Unspecified,
            Reason::KeyCompromise => v1::RevocationReason::KeyCompromise,
            Reason::AffiliationChanged => v1::RevocationReason::AffiliationChanged,
            Reason::Superseded => v1::RevocationReason::Superseded,
            Reason::CessationOfOperation => v1::RevocationReason::CessationOfOperation,
            Reason::PrivilegeWithdrawn => v1::RevocationReason::PrivilegeWithdrawn,
        }
    }
}

/// What a command prints: JSON with `--json`, text otherwise.
struct Output {
    json: Value,
    text: String,
}

impl Output {
    /// A listing read from the ledger at block `height`: says so (a later block may have
    /// changed it), in the text and as `as_of_block` in the JSON.
    fn reflecting(mut self, height: u64) -> Output {
        self.text.push_str(&format!("\n(as of block {height})"));
        if let Value::Object(map) = &mut self.json {
            map.insert("as_of_block".into(), Value::from(height));
        }
        self
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let json = cli.json;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(output) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&output.json).unwrap_or_default()
                );
            } else {
                println!("{}", output.text.trim_end());
            }
            ExitCode::SUCCESS
        }
        // The failed verification's report is already out.
        Err(error @ ClientError::VerificationFailed(_)) => {
            if !json {
                eprintln!("error: {error}");
            }
            ExitCode::FAILURE
        }
        Err(error) => {
            if json {
                let body = json!({"error": {"kind": error.kind(), "message": error.to_string(), "hint": error.hint()}});
                println!(
                    "{}",
                    serde_json::to_string_pretty(&body).unwrap_or_default()
                );
            } else {
                eprintln!("error: {error}");
                if let Some(hint) = error.hint() {
                    eprintln!("hint: {hint}");
                }
            }
            ExitCode::FAILURE
        }
    }
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

fn format_time(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| unix.to_string())
}

/// The wallet to act as: --wallet, else the only one under ~/.medledger.
fn wallet_dir(cli: &Cli) -> Result<PathBuf, ClientError> {
    if let Some(dir) = &cli.wallet {
        return Ok(dir.clone());
    }
    let home = wallets_home()?;
    let wallets: Vec<PathBuf> = std::fs::read_dir(&home)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.join("cert.pem").exists())
                .collect()
        })
        .unwrap_or_default();
    match wallets.as_slice() {
        [only] => Ok(only.clone()),
        // Right after `medledger network up`, act as its administrator.
        [] if medledger_devnet::default_dir()
            .join("wallets/admin/cert.pem")
            .exists() =>
        {
            Ok(medledger_devnet::default_dir().join("wallets/admin"))
        }
        [] => Err(ClientError::Usage(format!(
            "no wallet in {}; enroll first (`medledger enroll`) or pass --wallet DIR",
            home.display()
        ))),
        several => Err(ClientError::Usage(format!(
            "several wallets in {} ({}); choose one with --wallet or MEDLEDGER_WALLET",
            home.display(),
            several
                .iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// The wallet as it is on disk (for commands that contact no CA, or renew it themselves).
fn open_wallet_as_is(cli: &Cli) -> Result<Wallet, ClientError> {
    Wallet::open(&wallet_dir(cli)?)
}

/// The wallet, its certificate renewed first (same keys, `medledger_sdk::renewal`) when it is
/// due: a command run late in its certificate's life carries a fresh one. A renewal that
/// fails is reported, and the command goes on with the certificate it has.
async fn open_wallet(cli: &Cli) -> Result<Wallet, ClientError> {
    let (wallet, _) = medledger_devnet::open_current(&wallet_dir(cli)?, cli.ca.as_deref()).await?;
    Ok(wallet)
}

/// The wallet the `ledger` commands act as: --wallet; else, when the local network in
/// `network_dir` (default: `medledger network up`'s) has one and --peer is none or one of
/// its peers, its auditor, the ledger's reader (only peers and the auditors the
/// configuration names may read blocks); else as [`open_wallet`].
async fn reader_wallet(cli: &Cli, network_dir: Option<&Path>) -> Result<Wallet, ClientError> {
    if cli.wallet.is_none() {
        let dir = network_dir.map_or_else(medledger_devnet::default_dir, Path::to_path_buf);
        let auditor = dir.join("wallets").join(medledger_devnet::AUDITOR);
        let this_network = match (&cli.peer, medledger_devnet::Layout::read(&dir)) {
            (None, _) => true,
            (Some(peer), Ok(layout)) => layout.peers.contains(peer),
            (Some(_), Err(_)) => false,
        };
        if this_network && auditor.join("cert.pem").exists() {
            let (wallet, _) = medledger_devnet::open_current(&auditor, cli.ca.as_deref()).await?;
            return Ok(wallet);
        }
    }
    open_wallet(cli).await
}

fn ca_url(cli: &Cli, wallet: Option<&Wallet>) -> String {
    cli.ca
        .clone()
        .or_else(|| wallet.map(|w| w.info.ca_url.clone()))
        .unwrap_or_else(|| DEFAULT_CA_URL.to_string())
}

/// The root to trust: --ca-root, else the wallet's.
fn trusted_root(cli: &Cli, wallet: Option<&Wallet>) -> Result<Vec<u8>, ClientError> {
    if let Some(path) = &cli.ca_root {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ClientError::Usage(format!("--ca-root {}: {e}", path.display())))?;
        return pem_decode(&text, "CERTIFICATE")
            .map_err(|e| ClientError::Usage(format!("--ca-root {}: {e}", path.display())));
    }
    match wallet {
        Some(wallet) => Ok(wallet.root()?.der().to_vec()),
        None => Err(ClientError::Usage(
            "pass --ca-root FILE (the CA's ca-root.pem; compare its fingerprint with the CA operator's)".into(),
        )),
    }
}

async fn admin_client(cli: &Cli) -> Result<(CaClient, Wallet), ClientError> {
    let wallet = open_wallet(cli).await?;
    let root = trusted_root(cli, Some(&wallet))?;
    let ca = CaClient::connect(
        &ca_url(cli, Some(&wallet)),
        &root,
        TlsIdentity::Wallet(&wallet),
    )
    .await?;
    Ok((ca, wallet))
}

async fn run(cli: Cli) -> Result<Output, ClientError> {
    match &cli.command {
        Command::CaInfo => {
            let wallet = cli.wallet.as_ref().map(|d| Wallet::open(d)).transpose()?;
            let root = trusted_root(&cli, wallet.as_ref())?;
            let url = ca_url(&cli, wallet.as_ref());
            let info = CaClient::connect(&url, &root, TlsIdentity::Anonymous)
                .await?
                .ca_info()
                .await?;
            Ok(Output {
                text: format!(
                    "CA {url}\n  version: {}\n  root fingerprint (SHA-256): {}\n  certificate validity: {} s\n  revocations so far: {}",
                    info.version,
                    info.root_fingerprint,
                    info.certificate_validity_seconds,
                    info.latest_revocation_sequence
                ),
                json: json!({
                    "ca": url,
                    "version": info.version,
                    "root_fingerprint": info.root_fingerprint,
                    "certificate_validity_seconds": info.certificate_validity_seconds,
                    "latest_revocation_sequence": info.latest_revocation_sequence,
                }),
            })
        }
        Command::Enroll {
            name,
            secret,
            genesis,
        } => {
            medledger_crypto::validate_name(name).map_err(|e| ClientError::Usage(e.to_string()))?;
            let dir = match &cli.wallet {
                Some(dir) => dir.clone(),
                None => default_wallet_dir(name)?,
            };
            let root = trusted_root(&cli, None)?;
            let url = ca_url(&cli, None);
            // Checked before enrolling: a wrong file must not use up the one-time secret and
            // leave an enrolled, unpinned wallet.
            let genesis = genesis
                .as_ref()
                .map(|path| {
                    let block = medledger_sdk::peer::read_genesis_file(path)?;
                    medledger_sdk::peer::check_genesis(&root, block.clone())?;
                    Ok::<_, ClientError>(block)
                })
                .transpose()?;
            let wallet = medledger_sdk::enroll(&url, &root, name, secret, &dir).await?;
            let network = genesis
                .map(|block| medledger_sdk::peer::pin_network(&wallet, block))
                .transpose()?;
            let identity = wallet.identity_at(now_unix())?;
            Ok(Output {
                text: format!(
                    "Enrolled {} as {}. Wallet: {}\n  certificate serial {}, valid until {}\n  {}",
                    identity.name,
                    identity.role,
                    dir.display(),
                    identity.serial_hex(),
                    format_time(identity.not_after),
                    describe_pin(network.as_ref())
                ),
                json: json!({
                    "name": identity.name,
                    "role": identity.role.as_str(),
                    "wallet": dir,
                    "serial": identity.serial_hex(),
                    "not_after": format_time(identity.not_after),
                    "network": network.map(hex::encode),
                }),
            })
        }
        Command::Reenroll {
            new_signing_key,
            key_compromise,
        } => {
            // As it is: the renewal asked for is the only one (a key compromised is not
            // renewed first).
            let mut wallet = open_wallet_as_is(&cli)?;
            let url = ca_url(&cli, Some(&wallet));
            let renewal = medledger_sdk::Renewal {
                new_signing_key: *new_signing_key,
                key_compromise: *key_compromise,
                ..Default::default()
            };
            let response = medledger_sdk::reenroll(&url, &mut wallet, renewal).await?;
            let superseded: Vec<String> = response
                .superseded
                .iter()
                .filter_map(|signed| {
                    <v1::RevocationRecord as prost::Message>::decode(signed.record.as_slice()).ok()
                })
                .map(|r| hex::encode(r.serial))
                .collect();
            let keys = match (key_compromise, new_signing_key) {
                (true, _) => "New signing and encryption keys (the key ring emptied)",
                (false, true) => "New signing and encryption keys (earlier encryption keys kept)",
                (false, false) => {
                    "Same signing key, new encryption key (earlier encryption keys kept)"
                }
            };
            Ok(Output {
                text: format!(
                    "{keys} and a new certificate for {} in {}\n  certificate serial {}, valid until {}{}",
                    wallet.info.name,
                    wallet.dir.display(),
                    response.serial,
                    format_time(response.not_after_unix),
                    if superseded.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "\n  revoked at the CA ({}): {}; the peers put it on the ledger by themselves",
                            if *key_compromise {
                                "key compromise"
                            } else {
                                "superseded"
                            },
                            superseded.join(", ")
                        )
                    }
                ),
                json: json!({
                    "name": wallet.info.name,
                    "wallet": wallet.dir,
                    "serial": response.serial,
                    "not_after": format_time(response.not_after_unix),
                    "superseded": superseded,
                    "key_ring": wallet.previous_encryption.len(),
                }),
            })
        }
        Command::Whoami => {
            let wallet = open_wallet(&cli).await?;
            let now = now_unix();
            let identity = wallet.certificate_identity()?;
            let valid_now = identity.not_before <= now && now <= identity.not_after;
            let attributes: Vec<Value> = identity
                .attributes
                .iter()
                .map(|a| {
                    json!({
                        "key": a.key, "value": a.value,
                        "not_before": a.window.not_before.map(format_time),
                        "not_after": a.window.not_after.map(format_time),
                        "in_force": a.holds_at(now),
                    })
                })
                .collect();
            let mut text = format!(
                "{} ({})\n  wallet: {}\n  CA: {}\n  certificate serial {}, valid {} to {}{}\n  signing key (Ed25519): {}\n  encryption key (X25519): {}",
                identity.name,
                identity.role,
                wallet.dir.display(),
                wallet.info.ca_url,
                identity.serial_hex(),
                format_time(identity.not_before),
                format_time(identity.not_after),
                if valid_now {
                    ""
                } else {
                    " (NOT VALID NOW: reenroll before expiry, or ask an administrator)"
                },
                identity.signing_key,
                identity.encryption_key
            );
            let network = medledger_sdk::peer::pinned_network(&wallet)?;
            text.push_str(&format!("\n  {}", describe_pin(network.as_ref())));
            for a in &identity.attributes {
                text.push_str(&format!("\n  attribute {}={}", a.key, a.value));
                if a.window != medledger_crypto::AttributeWindow::ALWAYS {
                    text.push_str(&format!(
                        " (from {} until {}{})",
                        a.window
                            .not_before
                            .map(format_time)
                            .unwrap_or_else(|| "-".into()),
                        a.window
                            .not_after
                            .map(format_time)
                            .unwrap_or_else(|| "-".into()),
                        if a.holds_at(now) {
                            ""
                        } else {
                            "; not in force now"
                        }
                    ));
                }
            }
            Ok(Output {
                text,
                json: json!({
                    "name": identity.name,
                    "role": identity.role.as_str(),
                    "wallet": wallet.dir,
                    "ca": wallet.info.ca_url,
                    "serial": identity.serial_hex(),
                    "not_before": format_time(identity.not_before),
                    "not_after": format_time(identity.not_after),
                    "valid_now": valid_now,
                    "signing_key": identity.signing_key.to_string(),
                    "encryption_key": identity.encryption_key.to_string(),
                    "certificate_hash": hex::encode(identity.cert_hash),
                    "network": network.map(hex::encode),
                    "attributes": attributes,
                }),
            })
        }
        Command::Admin(admin) => run_admin(&cli, admin).await,
        Command::Ledger(ledger) => run_ledger(&cli, ledger).await,
        Command::Patient(c) => records_cli::run_patient(&cli, c).await,
        Command::Clinician(c) => records_cli::run_clinician(&cli, c).await,
        Command::Network(c) => network_cli::run_network(&cli, c).await,
        Command::Researcher(c) => records_cli::run_researcher(&cli, c).await,
        Command::Demo { dir } => {
            let dir = dir.clone().unwrap_or_else(medledger_devnet::default_dir);
            demo::run(cli.json, &dir).await
        }
    }
}

async fn run_ledger(cli: &Cli, command: &LedgerCommand) -> Result<Output, ClientError> {
    if let LedgerCommand::Verify(args) = command {
        return network_cli::run_verify(cli, args).await;
    }
    if let LedgerCommand::CheckProof { file, genesis } = command {
        // Offline: the genesis alone, no peer.
        let genesis =
            match genesis {
                Some(path) => medledger_execution::genesis::Genesis::read(path)
                    .map_err(|e| ClientError::Usage(e.to_string()))?,
                None => medledger_sdk::peer::pinned_genesis(&open_wallet_as_is(cli)?)?.ok_or_else(
                    || ClientError::Usage("give --genesis (the wallet is not pinned)".into()),
                )?,
            };
        return proof_cli::check_proof_file(file, &genesis);
    }
    let wallet = reader_wallet(cli, None).await?;
    let peer = cli.peer.as_deref().unwrap_or(DEFAULT_PEER);
    let peers = medledger_sdk::peer::PeerSet::connect(&wallet, peer).await?;
    match command {
        LedgerCommand::Info => {
            let mut rows = Vec::new();
            let configuration = peers.configuration();
            let mut text = format!(
                "network {} (pinned in the wallet) — {} peers, f = {}\n\
                 configuration {} ({}), followed from the genesis with proofs",
                hex::encode(&peers.network_id[..8]),
                peers.n(),
                peers.votes_needed() - 1,
                configuration.sequence,
                hex::encode(&configuration.hash[..8]),
            );
            let (names, addresses) = (peers.names(), peers.addresses());
            // Every peer at once, each for 20 s at most; a refusal by its kind, not the
            // peer's words (they are its own).
            let statuses = verify::statuses(&peers).await.into_iter().map(|s| {
                s.map_err(|code| match code {
                    Some(code) => format!("{code:?}"),
                    None => "no answer in 20 s".to_string(),
                })
            });
            for (i, status) in statuses.enumerate() {
                match status {
                    Ok(s) => {
                        let connected = s.peers.iter().filter(|p| p.connected).count();
                        text.push_str(&format!(
                            "\n  {:<10} {:<22} height {:<8} view {:<4} primary {}{}  links {}/{}",
                            names[i],
                            addresses[i],
                            s.height,
                            s.view,
                            s.primary,
                            if s.in_view_change {
                                " (view change)"
                            } else {
                                ""
                            },
                            connected,
                            s.peers.len()
                        ));
                        let mut row = json!({
                            "name": names[i], "address": addresses[i], "up": true,
                            "height": s.height, "view": s.view, "primary": s.primary,
                            "in_view_change": s.in_view_change,
                            "last_block_hash": hex::encode(&s.last_block_hash),
                            "connected_peers": connected,
                        });
                        // The ledger's readers (auditors) see what each peer holds and lacks
                        // of the private values (docs/adr/0017, step 5).
                        if let Some(p) = &s.private_data {
                            text.push_str(&if p.last_pass_ms == 0 {
                                "  private values: not reconciled yet".to_string()
                            } else {
                                format!(
                                    "  private values missing: {} at {}",
                                    p.missing,
                                    format_time(p.last_pass_ms / 1000)
                                )
                            });
                            if p.purged_uncompacted > 0 {
                                text.push_str(&format!(
                                    "; deleted by purges, not yet compacted off its disk: {}",
                                    p.purged_uncompacted
                                ));
                            }
                            row["private_values"] = json!({
                                "missing": p.missing,
                                "last_pass_ms": p.last_pass_ms,
                                "purged_uncompacted": p.purged_uncompacted,
                            });
                        }
                        rows.push(row);
                    }
                    Err(e) => {
                        text.push_str(&format!(
                            "\n  {:<10} {:<22} DOWN ({})",
                            names[i], addresses[i], e
                        ));
                        rows.push(json!({"name": names[i], "address": addresses[i], "up": false}));
                    }
                }
            }
            Ok(Output {
                text,
                json: json!({
                    "network_id": hex::encode(peers.network_id),
                    "configuration": {
                        "sequence": configuration.sequence,
                        "hash": hex::encode(configuration.hash),
                        "max_tx_lifetime_ms": configuration.parameters.max_tx_lifetime_ms,
                        "max_envelope_bytes": configuration.parameters.max_envelope_bytes,
                        "admins": configuration.admins.as_ref().map_or(0, |a| a.keys.len()),
                        "admin_threshold": configuration.admins.as_ref().map_or(0, |a| a.threshold),
                    },
                    "peers": rows,
                }),
            })
        }
        LedgerCommand::Verify(_) | LedgerCommand::CheckProof { .. } => {
            unreachable!("handled above")
        }
        LedgerCommand::Proof(args) => {
            proof_cli::write_proof(&peers, args.block, args.index, &args.out).await
        }
        LedgerCommand::Emergencies { from, limit } => {
            let (blocks, cut) = proof_cli::proven_blocks(&peers, *from, *limit).await?;
            let events: Vec<EmergencyEvent<'_>> = emergency_events(&blocks).collect();
            let private = private_reasons(&peers, &events).await;
            let output = emergencies_output(&blocks, &events, &wallet, &private);
            Ok(stopped_at(output, &cut, &blocks, *limit))
        }
        LedgerCommand::Blocks { from, limit } => {
            // Each block checked whole (f+1 votes on its header, every outcome under its
            // roots): one peer alone can neither show an outcome that is not there nor hide
            // or whitewash one.
            let (blocks, cut) = proof_cli::proven_blocks(&peers, *from, *limit).await?;
            let mut text = String::new();
            let mut rows = Vec::new();
            for b in &blocks {
                let Some(h) = &b.header else { continue };
                let valid = b
                    .results
                    .iter()
                    .filter(|r| r.status == v1::TxStatus::Valid as i32)
                    .count();
                let hash = medledger_sdk::peer::header_hash(h);
                let view = b.certificate.as_ref().map_or(0, |c| c.view);
                text.push_str(&format!(
                    "{:>6}  {}  {}  {} tx ({} valid)  view {}\n",
                    h.number,
                    &hex::encode(hash)[..16],
                    format_time(h.time_ms / 1000),
                    b.envelopes.len(),
                    valid,
                    view
                ));
                rows.push(json!({
                    "number": h.number, "hash": hex::encode(hash), "time_ms": h.time_ms,
                    "view": view, "transactions": b.envelopes.len(), "valid": valid,
                    "results": b.results.iter().map(|r| json!({
                        "tx_id": hex::encode(&r.tx_id),
                        "status": v1::TxStatus::try_from(r.status).map(|s| s.as_str_name()).unwrap_or("UNKNOWN"),
                        "function": r.function, "creator": r.creator,
                        "code": v1::ResultCode::try_from(r.code).map(|c| c.as_str_name()).unwrap_or("RESULT_CODE_UNKNOWN"),
                    })).collect::<Vec<_>>(),
                }));
            }
            if blocks.is_empty() {
                text = format!("No blocks from {from} on.");
            }
            let output = Output {
                text: text.trim_end().to_string(),
                json: json!({"blocks": rows}),
            };
            Ok(stopped_at(output, &cut, &blocks, *limit))
        }
    }
}

/// `output` of a listing of proven `blocks` (at most `limit` asked for), saying where it
/// stopped short when it did (`cut`, from `proof_cli::proven_blocks`; empty when it did
/// not): said, not hidden — the next block did not check on any peer (yet); and from where
/// to go on (`next_from`) when the listing was full or stopped short.
fn stopped_at(mut output: Output, cut: &str, blocks: &[v1::Block], limit: u32) -> Output {
    let next = blocks
        .last()
        .and_then(|b| b.header.as_ref())
        .map(|h| h.number.saturating_add(1));
    if !cut.is_empty() {
        output.text.push_str(&format!(
            "\nStopped before the next block: no peer served it with f+1 votes ({cut})."
        ));
        output.json["stopped"] = json!(cut);
    }
    if let Some(next) = next
        && (blocks.len() >= limit as usize || !cut.is_empty())
    {
        output
            .text
            .push_str(&format!("\nMore blocks may follow: --from {next}."));
        output.json["next_from"] = json!(next);
    }
    output
}

/// The emergency accesses' events in `blocks`.
/// An emergency access as a block's event records it: the block, the transaction's
/// outcome, the event.
type EmergencyEvent<'a> = (&'a v1::Block, &'a v1::TxResult, v1::EmergencyAccessEvent);

fn emergency_events(blocks: &[v1::Block]) -> impl Iterator<Item = EmergencyEvent<'_>> {
    blocks.iter().flat_map(|block| {
        block.results.iter().flat_map(move |result| {
            result
                .events
                .iter()
                .filter(|e| e.name == "emergency_access")
                .filter_map(move |event| {
                    <v1::EmergencyAccessEvent as prost::Message>::decode(event.payload.as_slice())
                        .ok()
                        .map(|e| (block, result, e))
                })
        })
    })
}

/// A sealed reason kept as private data (ledger format 7), by (record, audit entry): the
/// reason, or why none could be had (the record erased, no peer holding it).
type PrivateReasons = std::collections::BTreeMap<(Vec<u8>, u64), Result<v1::SealedText, String>>;

/// The sealed reasons the emergency accesses of `blocks` committed to as private data
/// (ledger format 7), asked of the peers record by record (`sealed_reasons`, checked
/// against each event's commitment).
async fn private_reasons(
    peers: &medledger_sdk::peer::PeerSet,
    events: &[EmergencyEvent<'_>],
) -> PrivateReasons {
    let mut wanted: std::collections::BTreeMap<Vec<u8>, Vec<(u64, Vec<u8>)>> =
        std::collections::BTreeMap::new();
    for (_, _, e) in events {
        if !e.sealed_reason_commitment.is_empty() {
            wanted
                .entry(e.pseudonym.clone())
                .or_default()
                .push((e.audit_seq, e.sealed_reason_commitment.clone()));
        }
    }
    let mut found = PrivateReasons::new();
    for (pseudonym, entries) in wanted {
        let mut gathered = match peers.sealed_reasons(&pseudonym, &entries).await {
            Ok(gathered) => gathered,
            Err(e) => {
                for (seq, _) in entries {
                    found.insert(
                        (pseudonym.clone(), seq),
                        Err(medledger_sdk::reasons::not_available(e.kind())),
                    );
                }
                continue;
            }
        };
        for (seq, _) in entries {
            let reason = match gathered.remove(&seq) {
                Some(GatheredReason::Sealed(sealed)) => Ok(sealed),
                Some(GatheredReason::NotASealedText) => {
                    Err(medledger_sdk::reasons::NOT_A_SEALED_TEXT.to_string())
                }
                Some(GatheredReason::Refused(kind)) => {
                    Err(medledger_sdk::reasons::not_available(kind))
                }
                None => Err(medledger_sdk::reasons::UNAVAILABLE.to_string()),
            };
            found.insert((pseudonym.clone(), seq), reason);
        }
    }
    found
}

/// Every emergency access `blocks` record (`events`, from them), with its reason opened by
/// one of `wallet`'s keys (current or earlier: an auditor's key ring); a reason kept as
/// private data (ledger format 7) from `private`.
fn emergencies_output(
    blocks: &[v1::Block],
    events: &[EmergencyEvent<'_>],
    wallet: &Wallet,
    private: &PrivateReasons,
) -> Output {
    let mut rows = Vec::new();
    let mut text = String::new();
    for (block, result, e) in events {
        let Some(header) = &block.header else {
            continue;
        };
        let reason = if e.sealed_reason_commitment.is_empty() {
            medledger_sdk::reasons::shown(
                e.sealed_reason.as_ref(),
                &e.pseudonym,
                &e.category,
                &e.clinician,
                wallet.encryption_keys(),
            )
        } else {
            match private.get(&(e.pseudonym.clone(), e.audit_seq)) {
                Some(Ok(sealed)) => medledger_sdk::reasons::shown(
                    Some(sealed),
                    &e.pseudonym,
                    &e.category,
                    &e.clinician,
                    wallet.encryption_keys(),
                ),
                Some(Err(why)) => why.clone(),
                None => medledger_sdk::reasons::UNAVAILABLE.to_string(),
            }
        };
        text.push_str(&format!(
            "\n  block {:<6} {}  {:<14} record {}  {:<20} until {}  — {}",
            header.number,
            format_time(header.time_ms / 1000),
            e.clinician,
            hex::encode(&e.pseudonym)
                .chars()
                .take(16)
                .collect::<String>(),
            e.category,
            format_time(e.until),
            reason
        ));
        rows.push(json!({
            "block": header.number, "time": format_time(header.time_ms / 1000),
            "tx_id": hex::encode(&result.tx_id), "clinician": e.clinician,
            "pseudonym": hex::encode(&e.pseudonym), "category": e.category,
            "until": format_time(e.until), "reason": reason,
        }));
    }
    let last = blocks
        .last()
        .and_then(|b| b.header.as_ref())
        .map_or(0, |h| h.number);
    Output {
        text: format!(
            "{} emergency access(es) in {} block(s){}{text}",
            rows.len(),
            blocks.len(),
            if blocks.is_empty() {
                String::new()
            } else {
                format!(" up to {last}")
            }
        ),
        json: json!({"emergencies": rows, "last_block": last}),
    }
}

/// Submits every CA revocation record, in order, to the ledger through `peer`. Records
/// already on the ledger come back with their original commit proofs. Returns (sequence, block).
async fn sync_revocations(
    ca: &mut CaClient,
    wallet: &Wallet,
    peer: &str,
) -> Result<Vec<(u64, u64)>, ClientError> {
    let peers = medledger_sdk::peer::PeerSet::connect(wallet, peer).await?;
    let response = ca.revocations(0).await?;
    let mut placed = Vec::new();
    for signed in response.records {
        let record = <v1::RevocationRecord as prost::Message>::decode(signed.record.as_slice())
            .map_err(|e| ClientError::Protocol(format!("revocation record: {e}")))?;
        let committed = peers
            .submit_envelope(v1::Envelope {
                kind: Some(v1::envelope::Kind::Revocation(signed)),
            })
            .await?;
        if committed.status != v1::TxStatus::Valid {
            return Err(ClientError::Protocol(format!(
                "the ledger refused revocation #{}: {}",
                record.sequence, committed.message
            )));
        }
        placed.push((record.sequence, committed.block));
    }
    Ok(placed)
}

async fn run_admin(cli: &Cli, command: &AdminCommand) -> Result<Output, ClientError> {
    if let AdminCommand::Config(c) = command {
        return config_cli::run_config(cli, c).await;
    }
    let (mut ca, wallet) = admin_client(cli).await?;
    match command {
        AdminCommand::Config(_) => unreachable!("handled above"),
        AdminCommand::SyncRevocations => {
            let peer = cli.peer.as_deref().ok_or_else(|| {
                ClientError::Usage("give a peer with --peer HOST:PORT (or MEDLEDGER_PEER)".into())
            })?;
            let placed = sync_revocations(&mut ca, &wallet, peer).await?;
            Ok(Output {
                text: format!(
                    "{} revocation(s) on the ledger{}",
                    placed.len(),
                    placed
                        .iter()
                        .map(|(seq, block)| format!("\n  #{seq} in block {block}"))
                        .collect::<String>()
                ),
                json: json!({"revocations": placed.iter().map(|(seq, block)| json!({"sequence": seq, "block": block})).collect::<Vec<_>>()}),
            })
        }
        AdminCommand::Register(args) => {
            let attributes = args
                .attributes
                .iter()
                .map(|a| parse_attribute(a))
                .collect::<Result<Vec<_>, _>>()?;
            let response = ca
                .register(v1::RegisterRequest {
                    name: args.name.clone(),
                    role: args.role.clone(),
                    attributes,
                    max_enrollments: args.max_enrollments,
                })
                .await?;
            Ok(Output {
                text: format!(
                    "Registered {} as {}. One-time enrollment secret (shown once):\n{}\nThe new user runs: medledger enroll --name {} --secret <secret> --ca-root <ca-root.pem>",
                    response.name, args.role, response.secret, response.name
                ),
                json: json!({"name": response.name, "role": args.role, "secret": response.secret}),
            })
        }
        AdminCommand::Revoke {
            name,
            serial,
            reason,
        } => {
            let target = match (name, serial) {
                (Some(name), _) => v1::revoke_request::Target::Name(name.clone()),
                (None, Some(serial)) => v1::revoke_request::Target::Serial(serial.to_lowercase()),
                (None, None) => return Err(ClientError::Usage("give --name or --serial".into())),
            };
            let reason = v1::RevocationReason::from(*reason);
            let response = ca
                .revoke(v1::RevokeRequest {
                    target: Some(target),
                    reason: reason as i32,
                })
                .await?;
            let records = response
                .records
                .iter()
                .map(|signed| {
                    <v1::RevocationRecord as prost::Message>::decode(signed.record.as_slice())
                        .map_err(|e| ClientError::Protocol(format!("revocation record: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let mut text = if records.is_empty() {
                "Nothing to revoke: every matching certificate was already revoked.".to_string()
            } else {
                format!("Revoked {} certificate(s):", records.len())
            };
            for r in &records {
                text.push_str(&format!(
                    "\n  #{} {} serial {} ({})",
                    r.sequence,
                    r.name,
                    hex::encode(&r.serial),
                    reason.as_str_name()
                ));
            }
            // The peers follow the CA and put the revocation on the ledger by themselves
            // (peer/src/revocation_feed.rs). With a peer at hand, this waits for its block:
            // from that block on, every peer refuses the certificate.
            let mut on_ledger = Vec::new();
            if let Some(peer) = cli.peer.as_deref() {
                on_ledger = sync_revocations(&mut ca, &wallet, peer).await?;
                let ours: Vec<u64> = records.iter().map(|r| r.sequence).collect();
                for (seq, block) in on_ledger.iter().filter(|(s, _)| ours.contains(s)) {
                    text.push_str(&format!("\n  #{seq} is on the ledger in block {block}"));
                }
            } else if !records.is_empty() {
                text.push_str(
                    "\nThe peers put it on the ledger by themselves within seconds; \
                     `medledger admin sync-revocations --peer HOST:PORT` shows its block",
                );
            }
            Ok(Output {
                text,
                json: json!({"revoked": records.iter().map(|r| json!({
                    "sequence": r.sequence, "name": r.name, "serial": hex::encode(&r.serial),
                    "reason": reason.as_str_name(), "revoked_at": format_time(r.revoked_at_unix),
                    "block": on_ledger.iter().find(|(s, _)| *s == r.sequence).map(|(_, b)| *b),
                })).collect::<Vec<_>>()}),
            })
        }
        AdminCommand::Identities => {
            let mut identities = Vec::new();
            let mut after = String::new();
            loop {
                let page = ca.identities(after).await?;
                identities.extend(page.identities);
                if page.next_after.is_empty() {
                    break;
                }
                after = page.next_after;
            }
            let mut text = format!("{} identities", identities.len());
            for i in &identities {
                let active = i.certificates.iter().filter(|c| !c.revoked).count();
                text.push_str(&format!(
                    "\n  {:<24} {:<10} enrolled {}/{}  certificates: {} active, {} revoked{}",
                    i.name,
                    i.role,
                    i.enrollments_used,
                    i.max_enrollments,
                    active,
                    i.certificates.len() - active,
                    if i.revoked { "  REVOKED" } else { "" }
                ));
            }
            Ok(Output {
                text,
                json: json!({"identities": identities.iter().map(|i| json!({
                    "name": i.name, "role": i.role, "revoked": i.revoked,
                    "max_enrollments": i.max_enrollments, "enrollments_used": i.enrollments_used,
                    "registered_at": format_time(i.registered_at_unix),
                    "attributes": i.attributes.iter().map(|a| json!({"key": a.key, "value": a.value,
                        "not_before": a.not_before_unix.map(format_time), "not_after": a.not_after_unix.map(format_time)})).collect::<Vec<_>>(),
                    "certificates": i.certificates.iter().map(|c| json!({
                        "serial": c.serial, "not_before": format_time(c.not_before_unix),
                        "not_after": format_time(c.not_after_unix), "revoked": c.revoked,
                        "revocation_reason": c.revoked.then(|| v1::RevocationReason::try_from(c.revocation_reason)
                            .map(|r| r.as_str_name()).unwrap_or("REVOCATION_REASON_UNSPECIFIED")),
                    })).collect::<Vec<_>>(),
                })).collect::<Vec<_>>()}),
            })
        }
        AdminCommand::Crl { out } => {
            let crl = ca.crl().await?;
            let pem_text = pem_encode("X509 CRL", &crl.crl_der);
            let mut text = format!("CRL number {}", crl.crl_number);
            if let Some(path) = out {
                std::fs::write(path, &pem_text)
                    .map_err(|e| ClientError::Usage(format!("--out {}: {e}", path.display())))?;
                text.push_str(&format!(" written to {}", path.display()));
            } else {
                text.push('\n');
                text.push_str(&pem_text);
            }
            Ok(Output {
                text,
                json: json!({"crl_number": crl.crl_number, "pem": pem_text, "out": out}),
            })
        }
        AdminCommand::Revocations { since } => {
            let response = ca.revocations(*since).await?;
            let mut records = Vec::new();
            for signed in &response.records {
                let r = <v1::RevocationRecord as prost::Message>::decode(signed.record.as_slice())
                    .map_err(|e| ClientError::Protocol(format!("revocation record: {e}")))?;
                records.push(json!({
                    "sequence": r.sequence, "name": r.name, "serial": hex::encode(&r.serial),
                    "reason": r.reason().as_str_name(), "revoked_at": format_time(r.revoked_at_unix),
                    "signature": hex::encode(&signed.signature),
                }));
            }
            let text = format!(
                "{} revocation record(s) after #{since} (latest #{})\n{}",
                records.len(),
                response.latest_sequence,
                records
                    .iter()
                    .map(|r| format!(
                        "  #{} {} serial {}",
                        r["sequence"],
                        r["name"].as_str().unwrap_or(""),
                        r["serial"].as_str().unwrap_or("")
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
            Ok(Output {
                text,
                json: json!({"latest_sequence": response.latest_sequence, "records": records}),
            })
        }
    }
}

/// `key=value` or `key=value@FROM..UNTIL` (either end may be empty).
fn parse_attribute(text: &str) -> Result<v1::Attribute, ClientError> {
    let bad = |why: &str| ClientError::Usage(format!("--attr {text:?}: {why}"));
    let (key, rest) = text
        .split_once('=')
        .ok_or_else(|| bad("expected key=value"))?;
    let (value, window) = match rest.rsplit_once('@') {
        Some((value, window)) if window.contains("..") => (value, Some(window)),
        _ => (rest, None),
    };
    let (mut not_before, mut not_after) = (None, None);
    if let Some(window) = window {
        let (from, until) = window
            .split_once("..")
            .ok_or_else(|| bad("expected FROM..UNTIL"))?;
        not_before = parse_time(from).map_err(|e| bad(&e))?;
        not_after = parse_time(until).map_err(|e| bad(&e))?;
    }
    Ok(v1::Attribute {
        key: key.to_string(),
        value: value.to_string(),
        not_before_unix: not_before,
        not_after_unix: not_after,
    })
}

/// An RFC 3339 time or a date (midnight UTC); empty means unbounded.
fn parse_time(text: &str) -> Result<Option<i64>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(Some(t.unix_timestamp()));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(text, &format)
        .map(|d| Some(d.midnight().assume_utc().unix_timestamp()))
        .map_err(|_| format!("{text:?} is neither an RFC 3339 time nor a date like 2026-01-31"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_with_and_without_windows() {
        let a = parse_attribute("emergency=true").unwrap();
        assert_eq!((a.key.as_str(), a.value.as_str()), ("emergency", "true"));
        assert_eq!((a.not_before_unix, a.not_after_unix), (None, None));

        let a = parse_attribute("emergency=true@2026-01-01..2027-01-01T00:00:00Z").unwrap();
        assert_eq!(a.not_before_unix, Some(1_767_225_600));
        assert_eq!(a.not_after_unix, Some(1_798_761_600));

        let a = parse_attribute("email=a@b.org@..2027-01-01").unwrap();
        assert_eq!(a.value, "a@b.org");
        assert_eq!(
            (a.not_before_unix, a.not_after_unix),
            (None, Some(1_798_761_600))
        );

        let a = parse_attribute("email=a@b.org").unwrap();
        assert_eq!(a.value, "a@b.org");

        assert!(parse_attribute("novalue").is_err());
        assert!(parse_attribute("k=v@yesterday..tomorrow").is_err());
    }
}
