//! `medledger admin config`: changing the network's configuration (docs/adr/0010). One
//! admin proposes the next configuration into a file, each admin the policy needs approves
//! it (a signature added to the file, after seeing what it changes), and any of them submits
//! it; it is in force from the block after the one that commits it.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use medledger_execution::chain::MAX_CONFIG_ENVELOPE_BYTES;
use medledger_execution::config::{Configuration, approval_bytes, config_hash};
use medledger_proto::v1;
use medledger_sdk::configuration::{
    Changes, approve, in_policy_order, next_configuration, propose, submit,
};
use medledger_sdk::error::ClientError;
use medledger_sdk::peer::PeerSet;
use prost::Message;
use serde_json::json;

use crate::{Cli, DEFAULT_PEER, Output, open_wallet};

#[derive(Subcommand)]
pub enum ConfigCommand {
    /// Show the configuration in force, as followed from the pinned genesis with proofs.
    Show,
    /// Write the next configuration — the one in force with the changes given — to a file
    /// for the admins to approve.
    Propose {
        /// The longest a transaction may wait to be ordered, in ms (10,000 to 3,600,000).
        #[arg(long)]
        max_tx_lifetime_ms: Option<u64>,
        /// The largest transaction envelope, in bytes (8 KiB to the block size).
        #[arg(long)]
        max_envelope_bytes: Option<u32>,
        /// The admins of the new configuration: their enrollment certificates (PEM). Repeat
        /// for each; without any, the admins stay as they are.
        #[arg(long = "admin")]
        admins: Vec<PathBuf>,
        /// Approvals the new configuration's changes will need (default: a majority).
        #[arg(long)]
        admin_threshold: Option<u32>,
        /// Remove the peer of this name (a membership change, docs/adr/0011: the block that
        /// commits it is its replicas' last, and the others order from the next one). At
        /// most f of the peers at once.
        #[arg(long = "remove-peer")]
        remove_peers: Vec<String>,
        /// Add the peer enrolled with this certificate (PEM, role peer), reached at the
        /// `--peer-address` given in the same position; it is started with `medledger-peer
        /// serve --join` and takes part from the block after the one that commits the change.
        /// At most f of the new set at once.
        #[arg(long = "add-peer", requires = "peer_addresses")]
        add_peers: Vec<PathBuf>,
        /// HOST:PORT of each `--add-peer`, in the same order.
        #[arg(long = "peer-address")]
        peer_addresses: Vec<String>,
        /// Name as a reader of blocks (with the peers) the auditor enrolled with this
        /// certificate (PEM, role auditor): their signing key, kept across renewals.
        #[arg(long = "add-auditor")]
        add_auditors: Vec<PathBuf>,
        /// No longer a reader of blocks: the auditor of this name (as `admin config show`
        /// lists them).
        #[arg(long = "remove-auditor")]
        remove_auditors: Vec<String>,
        /// How long the admins have to approve and submit it (hours, at most 720).
        #[arg(long, default_value_t = 72)]
        valid_for_hours: u32,
        #[arg(long, short)]
        out: PathBuf,
    },
    /// Show what a proposed configuration changes from the one in force (peers, admins,
    /// the auditors who read blocks, by name and key) and who approved it so far, without
    /// signing: read it before `approve`.
    Review { file: PathBuf },
    /// Approve a proposed configuration as this wallet's admin: adds this admin's signature
    /// to the file and shows what it changes (`review` shows it first).
    Approve { file: PathBuf },
    /// Submit an approved configuration to the ledger.
    Submit { file: PathBuf },
}

pub async fn run_config(cli: &Cli, command: &ConfigCommand) -> Result<Output, ClientError> {
    let wallet = open_wallet(cli).await?;
    let peers = PeerSet::connect(&wallet, cli.peer.as_deref().unwrap_or(DEFAULT_PEER)).await?;
    let current = peers.configuration();
    match command {
        ConfigCommand::Show => Ok(Output {
            text: describe(&current),
            json: as_json(&current),
        }),
        ConfigCommand::Propose {
            max_tx_lifetime_ms,
            max_envelope_bytes,
            admins,
            admin_threshold,
            remove_peers,
            add_peers,
            peer_addresses,
            add_auditors,
            remove_auditors,
            valid_for_hours,
            out,
        } => {
            if add_peers.len() != peer_addresses.len() {
                return Err(ClientError::Usage(
                    "each --add-peer needs its --peer-address, in the same order".into(),
                ));
            }
            let changes = Changes {
                max_tx_lifetime_ms: *max_tx_lifetime_ms,
                max_envelope_bytes: *max_envelope_bytes,
                admins: admins.clone(),
                admin_threshold: *admin_threshold,
                remove_peers: remove_peers.clone(),
                add_peers: add_peers
                    .iter()
                    .cloned()
                    .zip(peer_addresses.iter().cloned())
                    .collect(),
                add_auditors: add_auditors.clone(),
                remove_auditors: remove_auditors.clone(),
                valid_for_hours: *valid_for_hours,
            };
            let (update, next) = propose(&wallet, &current, &changes)?;
            write(out, &update)?;
            Ok(Output {
                text: format!(
                    "Wrote configuration {} to {}.\n{}\nEach admin approves it with `medledger \
                     admin config approve {}`; then `medledger admin config submit {}`.",
                    next.sequence,
                    out.display(),
                    changes_words(&current, &next),
                    out.display(),
                    out.display()
                ),
                json: json!({"file": out, "sequence": next.sequence, "hash": hex::encode(next.hash)}),
            })
        }
        ConfigCommand::Review { file } => {
            let update = read(file)?;
            let value = update.config.clone().unwrap_or_default();
            let next = next_configuration(&wallet, &current, &value)?.map_err(|e| {
                ClientError::Usage(format!(
                    "{}: the update does not follow the configuration in force ({}): {e}",
                    file.display(),
                    current.sequence
                ))
            })?;
            let signed = approval_bytes(
                &current.network_id,
                &config_hash(&value),
                update.expires_at_ms,
            );
            let approvers: Vec<String> =
                in_policy_order(&wallet, &current, &signed, &update.signatures)?
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect();
            let needed = current.admins.as_ref().map_or(0, |a| a.threshold);
            Ok(Output {
                text: format!(
                    "Configuration {} in {} changes, from configuration {}:\n{}\n\
                     Approved so far by {} of the {} needed: {}.",
                    next.sequence,
                    file.display(),
                    current.sequence,
                    changes_words(&current, &next),
                    approvers.len(),
                    needed,
                    approvers.join(", ")
                ),
                json: json!({
                    "sequence": next.sequence,
                    "changes": changes_words(&current, &next),
                    "approvals": approvers,
                    "needed": needed,
                }),
            })
        }
        ConfigCommand::Approve { file } => {
            let mut update = read(file)?;
            let (next, approvers) = approve(&wallet, &current, &mut update)
                .map_err(|e| ClientError::Usage(format!("{}: {e}", file.display())))?;
            write(file, &update)?;
            let needed = current.admins.as_ref().map_or(0, |a| a.threshold);
            let expires = time::OffsetDateTime::from_unix_timestamp(update.expires_at_ms / 1000)
                .map(|t| t.to_string())
                .unwrap_or_default();
            Ok(Output {
                text: format!(
                    "{} approved configuration {} (to be ordered before {expires}):\n{}\n\
                     {} of the {} approvals needed are in {}: {}.",
                    wallet.info.name,
                    next.sequence,
                    changes_words(&current, &next),
                    approvers.len(),
                    needed,
                    file.display(),
                    approvers.join(", ")
                ),
                json: json!({
                    "sequence": next.sequence,
                    "approvals": approvers.len(),
                    "needed": needed,
                }),
            })
        }
        ConfigCommand::Submit { file } => {
            let update = read(file)?;
            let sequence = update.config.as_ref().map_or(0, |c| c.sequence);
            let (block, learned) =
                submit(&wallet, &peers, &current, update)
                    .await
                    .map_err(|e| match e {
                        ClientError::Usage(why) => {
                            ClientError::Usage(format!("{}: {why}", file.display()))
                        }
                        other => other,
                    })?;
            Ok(Output {
                text: format!(
                    "Configuration {sequence} committed in block {block} and is in force from \
                     block {} on (this client follows configuration {learned}).",
                    block + 1
                ),
                json: json!({"sequence": sequence, "block": block}),
            })
        }
    }
}

fn read(path: &Path) -> Result<v1::ConfigUpdate, ClientError> {
    let bytes =
        std::fs::read(path).map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?;
    if bytes.len() > MAX_CONFIG_ENVELOPE_BYTES {
        return Err(ClientError::Usage(format!(
            "{} is larger than a configuration update can be",
            path.display()
        )));
    }
    v1::ConfigUpdate::decode(bytes.as_slice()).map_err(|e| {
        ClientError::Usage(format!(
            "{} is not a configuration update: {e}",
            path.display()
        ))
    })
}

fn write(path: &Path, update: &v1::ConfigUpdate) -> Result<(), ClientError> {
    std::fs::write(path, update.encode_to_vec())
        .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))
}

/// What `next` changes from `current`, a line each.
pub fn changes_words(current: &Configuration, next: &Configuration) -> String {
    let (a, b) = (&current.parameters, &next.parameters);
    let mut lines = Vec::new();
    if a.max_tx_lifetime_ms != b.max_tx_lifetime_ms {
        lines.push(format!(
            "  max_tx_lifetime_ms: {} -> {}",
            a.max_tx_lifetime_ms, b.max_tx_lifetime_ms
        ));
    }
    if a.max_envelope_bytes != b.max_envelope_bytes {
        lines.push(format!(
            "  max_envelope_bytes: {} -> {}",
            a.max_envelope_bytes, b.max_envelope_bytes
        ));
    }
    if !current.same_replicas(next) {
        // Each peer with its full key: a certificate swapped under the same name and
        // address (a key rotation, or one admin's attempt to replace a peer) shows.
        let words = |c: &Configuration| {
            c.peers
                .iter()
                .zip(&c.peer_keys)
                .map(|(p, k)| {
                    format!(
                        "{} at {} ({})",
                        p.name,
                        p.address,
                        hex::encode(k.to_bytes())
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        lines.push(format!(
            "  peers (a membership change: a new replica set from the next block): {} -> {}",
            words(current),
            words(next)
        ));
    }
    if current.auditors != next.auditors {
        lines.push(format!(
            "  auditors who read blocks: [{}] -> [{}]",
            auditors_words(current),
            auditors_words(next)
        ));
    }
    if current.admins != next.admins {
        lines.push(format!(
            "  admins: {} -> {}",
            admins_words(current),
            admins_words(next)
        ));
    }
    if lines.is_empty() {
        "  (no change but the sequence number)".into()
    } else {
        lines.join("\n")
    }
}

/// Each auditor by name and full key: the admins who approve see whom they make a reader.
fn auditors_words(c: &Configuration) -> String {
    c.auditors
        .iter()
        .map(|a| format!("{} ({})", a.name, hex::encode(a.key.to_bytes())))
        .collect::<Vec<_>>()
        .join(", ")
}

fn admins_words(c: &Configuration) -> String {
    match &c.admins {
        Some(a) => format!(
            "{} of [{}]",
            a.threshold,
            a.keys
                .iter()
                .map(|k| hex::encode(k.to_bytes()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None => "none (fixed)".into(),
    }
}

fn describe(c: &Configuration) -> String {
    format!(
        "configuration {} ({})\n  peers: {}\n  max_tx_lifetime_ms: {}\n  max_envelope_bytes: {}\n  \
         admins: {}\n  auditors who read blocks: [{}]",
        c.sequence,
        hex::encode(c.hash),
        c.peers
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        c.parameters.max_tx_lifetime_ms,
        c.parameters.max_envelope_bytes,
        admins_words(c),
        auditors_words(c)
    )
}

fn as_json(c: &Configuration) -> serde_json::Value {
    json!({
        "sequence": c.sequence,
        "hash": hex::encode(c.hash),
        "peers": c.peers.iter().map(|p| p.name.clone()).collect::<Vec<_>>(),
        "max_tx_lifetime_ms": c.parameters.max_tx_lifetime_ms,
        "max_envelope_bytes": c.parameters.max_envelope_bytes,
        "admins": c.admins.as_ref().map(|a| a.keys.iter().map(|k| hex::encode(k.to_bytes())).collect::<Vec<_>>()),
        "admin_threshold": c.admins.as_ref().map(|a| a.threshold),
        "auditors": c.auditors.iter().map(|a| json!({"name": a.name, "key": hex::encode(a.key.to_bytes())})).collect::<Vec<_>>(),
    })
}
