//! `medledger patient ...` and `medledger clinician ...`: a patient's record, grants, and
//! clinical files through the storage gateway.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use medledger_chaincode::DEFAULT_CATEGORIES;
use medledger_client::ca::{CaClient, TlsIdentity};
use medledger_client::error::ClientError;
use medledger_client::files::{self, Destination, Reader};
use medledger_client::patient::RecordKeys;
use medledger_client::peer::PeerSet;
use medledger_client::wallet::Wallet;
use medledger_proto::v1;
use prost::Message;
use serde_json::json;

use crate::{Cli, DEFAULT_PEER, Output, ca_url, now_unix, open_wallet};

/// The local network's storage gateway.
pub const DEFAULT_GATEWAY: &str = "127.0.0.1:7070";

#[derive(Subcommand)]
pub enum PatientCommand {
    /// Creates this wallet's record keys (kept in the wallet, 0600) and registers the record
    /// on the ledger under its pseudonym. Prints the pseudonym to share with clinicians.
    Init {
        /// The patient's unique identifier (e.g. the hospital's record number). Only the
        /// pseudonym HMAC(K, UII) leaves this machine.
        #[arg(long, env = "MEDLEDGER_PATIENT_UII", hide_env_values = true)]
        uii: String,
        /// Categories to create keys for (repeat). Default: the three registered ones.
        #[arg(long = "category")]
        categories: Vec<String>,
    },
    /// Grants an enrolled identity rights on one category for a time window.
    Grant {
        /// The grantee's enrollment name.
        #[arg(long)]
        to: String,
        #[arg(long)]
        category: String,
        #[arg(long, value_enum, value_delimiter = ',', required = true)]
        rights: Vec<RightArg>,
        /// Window start, Unix seconds (default: now).
        #[arg(long)]
        from: Option<i64>,
        /// Window length in days.
        #[arg(long, default_value_t = 30)]
        days: u32,
    },
    /// Prints this wallet's pseudonym.
    Pseudonym,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RightArg {
    Read,
    Write,
    Share,
}

#[derive(Subcommand)]
pub enum ClinicianCommand {
    /// Encrypts FILE here and stores it as a new item of the patient's record.
    Upload {
        /// The patient's pseudonym (64 hex digits).
        #[arg(long)]
        patient: String,
        #[arg(long)]
        category: String,
        file: PathBuf,
    },
    /// Records the access on the ledger, downloads the item, checks it against the ledger's
    /// hash and decrypts it to -o.
    Download {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        item: String,
        #[arg(long, short = 'o')]
        output: PathBuf,
    },
}

fn pseudonym_arg(hex_text: &str) -> Result<[u8; 32], ClientError> {
    hex::decode(hex_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "--patient {hex_text:?} is not a pseudonym (64 hex digits, as `medledger patient pseudonym` prints)"
            ))
        })
}

async fn peers(cli: &Cli, wallet: &Wallet) -> Result<PeerSet, ClientError> {
    PeerSet::connect(wallet, cli.peer.as_deref().unwrap_or(DEFAULT_PEER)).await
}

/// A progress callback `(done, total)` drawing on `bar`.
fn follow(bar: &ProgressBar) -> impl FnMut(u64, u64) + Send + 'static {
    let bar = bar.clone();
    move |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    }
}

fn progress_bar(cli: &Cli, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        None,
        if cli.json {
            ProgressDrawTarget::hidden()
        } else {
            ProgressDrawTarget::stderr()
        },
    );
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(label.to_string());
    bar
}

pub async fn run_patient(cli: &Cli, command: &PatientCommand) -> Result<Output, ClientError> {
    let wallet = open_wallet(cli)?;
    match command {
        PatientCommand::Init { uii, categories } => {
            let categories: Vec<&str> = if categories.is_empty() {
                DEFAULT_CATEGORIES.to_vec()
            } else {
                categories.iter().map(String::as_str).collect()
            };
            let peers = peers(cli, &wallet).await?;
            let keys = RecordKeys::create(&wallet, uii, &categories)?;
            let committed = peers
                .submit("register_patient", keys.register_args().encode_to_vec())
                .await?
                .into_valid()?;
            let pseudonym = hex::encode(keys.pseudonym);
            Ok(Output {
                text: format!(
                    "registered your record in block {}\n  pseudonym: {pseudonym}\n  categories: {}\n  keys: {}",
                    committed.block,
                    categories.join(", "),
                    wallet.dir.join("record-keys.json").display()
                ),
                json: json!({"pseudonym": pseudonym, "block": committed.block, "categories": categories}),
            })
        }
        PatientCommand::Pseudonym => {
            let keys = RecordKeys::open(&wallet)?;
            let pseudonym = hex::encode(keys.pseudonym);
            Ok(Output {
                text: pseudonym.clone(),
                json: json!({"pseudonym": pseudonym}),
            })
        }
        PatientCommand::Grant {
            to,
            category,
            rights,
            from,
            days,
        } => {
            let keys = RecordKeys::open(&wallet)?;
            let peers = peers(cli, &wallet).await?;
            let rights: Vec<v1::Right> = rights
                .iter()
                .map(|r| match r {
                    RightArg::Read => v1::Right::Read,
                    RightArg::Write => v1::Right::Write,
                    RightArg::Share => v1::Right::Share,
                })
                .collect();
            let key_envelope = if rights.iter().any(|r| *r != v1::Right::Write) {
                // Read and share carry the category key, wrapped to the grantee's key.
                let mut ca = CaClient::connect(
                    &ca_url(cli, Some(&wallet)),
                    wallet.root()?.der(),
                    TlsIdentity::Wallet(&wallet),
                )
                .await?;
                let der = ca.certificate_of(to).await?;
                let identity = medledger_crypto::validate_enrollment_certificate(
                    &der,
                    &wallet.root()?,
                    now_unix(),
                    &std::collections::BTreeSet::<Vec<u8>>::new(),
                )
                .map_err(|e| ClientError::Protocol(format!("{to}'s certificate: {e}")))?;
                keys.envelope_for(&identity.encryption_key, category)?.1
            } else {
                Vec::new()
            };
            let from = from.unwrap_or_else(now_unix);
            let until = from + i64::from(*days) * 86_400;
            let committed = peers
                .submit(
                    "grant",
                    v1::GrantArgs {
                        pseudonym: keys.pseudonym.to_vec(),
                        grantee: to.clone(),
                        category: category.clone(),
                        rights: rights.iter().map(|r| *r as i32).collect(),
                        from,
                        until,
                        key_envelope,
                        ..Default::default()
                    }
                    .encode_to_vec(),
                )
                .await?
                .into_valid()?;
            let id = v1::IdResult::decode(committed.result.as_slice())
                .map(|r| r.id)
                .unwrap_or_default();
            Ok(Output {
                text: format!(
                    "granted {to} {} on {category} until {} (permission {id}, block {})",
                    rights
                        .iter()
                        .map(|r| r.as_str_name().trim_start_matches("RIGHT_").to_lowercase())
                        .collect::<Vec<_>>()
                        .join("+"),
                    crate::format_time(until),
                    committed.block
                ),
                json: json!({"permission": id, "block": committed.block, "from": from, "until": until}),
            })
        }
    }
}

pub async fn run_clinician(cli: &Cli, command: &ClinicianCommand) -> Result<Output, ClientError> {
    let wallet = open_wallet(cli)?;
    let (ClinicianCommand::Upload { patient, .. } | ClinicianCommand::Download { patient, .. }) =
        command;
    let pseudonym = pseudonym_arg(patient)?;
    let peers = peers(cli, &wallet).await?;
    // The patient acting on their own record uses the keys in their wallet.
    let own = RecordKeys::open(&wallet)
        .ok()
        .filter(|k| k.pseudonym == pseudonym);
    let mut gateway =
        files::connect_gateway(&wallet, cli.gateway.as_deref().unwrap_or(DEFAULT_GATEWAY)).await?;
    match command {
        ClinicianCommand::Upload { category, file, .. } => {
            let destination = match &own {
                Some(keys) => Destination::for_owner(keys, category)?,
                None => {
                    Destination::for_grantee(&peers, &wallet.info.name, pseudonym, category).await?
                }
            };
            let bar = progress_bar(cli, "upload");
            let uploaded =
                files::upload(&peers, &mut gateway, &destination, file, follow(&bar)).await;
            bar.finish_and_clear();
            let uploaded = uploaded?;
            Ok(Output {
                text: format!(
                    "stored {} as item {} ({} bytes encrypted, block {})\n  path: {}\n  sha256: {}",
                    file.display(),
                    uploaded.item_id,
                    uploaded.size,
                    uploaded.committed.block,
                    uploaded.path,
                    hex::encode(uploaded.sha256)
                ),
                json: json!({
                    "item": uploaded.item_id,
                    "path": uploaded.path,
                    "size": uploaded.size,
                    "sha256": hex::encode(uploaded.sha256),
                    "block": uploaded.committed.block,
                    "tx_id": hex::encode(uploaded.committed.tx_id),
                }),
            })
        }
        ClinicianCommand::Download { item, output, .. } => {
            let reader = match &own {
                Some(keys) => Reader::Owner(keys),
                None => Reader::Grantee(&wallet),
            };
            let bar = progress_bar(cli, "download");
            let downloaded = files::download(
                &peers,
                &mut gateway,
                reader,
                pseudonym,
                item,
                output,
                follow(&bar),
            )
            .await;
            bar.finish_and_clear();
            let downloaded = downloaded?;
            Ok(Output {
                text: format!(
                    "wrote {} ({} bytes) from item {}; hash checked against the ledger; access recorded in block {}{}",
                    output.display(),
                    downloaded.plaintext_size,
                    downloaded.item.id,
                    downloaded.committed.block,
                    if downloaded.emergency {
                        " (emergency access)"
                    } else {
                        ""
                    }
                ),
                json: json!({
                    "item": downloaded.item.id,
                    "category": downloaded.item.category,
                    "output": output,
                    "size": downloaded.plaintext_size,
                    "block": downloaded.committed.block,
                    "tx_id": hex::encode(downloaded.committed.tx_id),
                    "emergency": downloaded.emergency,
                }),
            })
        }
    }
}
