//! `medledger patient ...`, `medledger clinician ...` and `medledger researcher ...`: a
//! patient's record, grants and audit trail, clinical files through the storage gateway,
//! emergency access, and research sharing.

use std::path::PathBuf;

use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use medledger_chaincode::DEFAULT_CATEGORIES;
use medledger_proto::v1;
use medledger_sdk::ca::{CaClient, TlsIdentity};
use medledger_sdk::error::ClientError;
use medledger_sdk::files::{self, Destination, Reader};
use medledger_sdk::patient::RecordKeys;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::private_data::GatheredReason;
use medledger_sdk::reasons;
use medledger_sdk::record_credential;
use medledger_sdk::wallet::Wallet;
use prost::Message;
use serde_json::json;

use crate::{Cli, DEFAULT_PEER, Output, ca_url, format_time, now_unix, open_wallet, parse_time};

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
        /// Window start: an RFC 3339 time, a date (2026-12-01) or Unix seconds. Default: now.
        #[arg(long)]
        from: Option<String>,
        /// Window end (exclusive), like --from. Default: --days after the start.
        #[arg(long, conflicts_with = "days")]
        until: Option<String>,
        /// Window length in days (when --until is not given).
        #[arg(long)]
        days: Option<u32>,
        /// Window length in seconds (short windows; when neither --until nor --days is given).
        #[arg(long, conflicts_with_all = ["days", "until"])]
        seconds: Option<i64>,
        /// For --rights share: the study the grantee may share into.
        #[arg(long)]
        study: Option<String>,
        /// For --rights share: copies must be de-identified (FHIR R4 JSON only).
        #[arg(long, requires = "study")]
        anonymize: bool,
    },
    /// Ends a permission now (it stays on the ledger, marked revoked). When it held the
    /// category key, the key is rotated too: the revoked reader opens nothing added after.
    Revoke {
        #[arg(long)]
        permission: String,
    },
    /// Rotates a category's key: a new epoch for new items, wrapped again for every reader
    /// who keeps access (they still open the earlier items); whoever lost access opens
    /// nothing added afterwards. Revoke does it by itself.
    Rotate {
        #[arg(long)]
        category: String,
    },
    /// Every permission on this record: who, what, when, and whether it is live.
    Permissions,
    /// The clinical items of this record.
    Items,
    /// Who did what with this record, allowed and denied.
    Audit {
        /// text (default), or fhir: a FHIR R4 Bundle of AuditEvent resources.
        #[arg(long, value_enum, default_value = "text")]
        format: AuditFormat,
    },
    /// Erases this record: keys and items tombstoned on the ledger, every object deleted,
    /// and the record keys in this wallet destroyed. Cannot be undone.
    Erase {
        /// Confirms the erasure.
        #[arg(long)]
        yes: bool,
    },
    /// Prints this wallet's pseudonym.
    Pseudonym,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum AuditFormat {
    Text,
    Fhir,
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
    /// The records on which this wallet holds a live permission.
    Patients,
    /// The items of a patient's record this wallet may read now.
    Items {
        #[arg(long)]
        patient: String,
    },
    /// Shares an item into a study: read (recorded), de-identified if the grant requires it,
    /// encrypted to the study's key, stored under the patient's study pseudonym.
    Share {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        study: String,
        #[arg(long)]
        item: String,
        /// De-identify even if the grant does not require it.
        #[arg(long)]
        anonymize: bool,
    },
    /// Break-glass read access to one category (needs the certificate attribute
    /// emergency=true); short, flagged on the patient's trail and announced as an event.
    Emergency {
        #[arg(long)]
        patient: String,
        #[arg(long)]
        category: String,
        #[arg(long)]
        reason: String,
        /// How long, in minutes (at most 24 hours). Default: 24 hours.
        #[arg(long)]
        minutes: Option<i64>,
    },
}

#[derive(Subcommand)]
pub enum ResearcherCommand {
    /// Studies.
    #[command(subcommand)]
    Study(StudyCommand),
}

#[derive(Subcommand)]
pub enum StudyCommand {
    /// Registers a study with a new study key (kept in this wallet, 0600).
    Create {
        #[arg(long)]
        id: String,
        #[arg(long)]
        title: String,
        /// The protocol document; its SHA-256 goes on the ledger. Default: the title's.
        #[arg(long)]
        protocol: Option<PathBuf>,
    },
    /// This researcher's studies.
    List,
    /// Downloads and decrypts every copy shared into the study (each a recorded access).
    Fetch {
        #[arg(long)]
        study: String,
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

/// Rotates `category`'s key of the wallet's record (medledger_sdk::rotation).
async fn rotate(
    cli: &Cli,
    wallet: &Wallet,
    peers: &PeerSet,
    keys: &mut RecordKeys,
    category: &str,
) -> Result<medledger_sdk::rotation::Rotation, ClientError> {
    let mut ca = CaClient::connect(
        &ca_url(cli, Some(wallet)),
        wallet.root()?.der(),
        TlsIdentity::Wallet(wallet),
    )
    .await?;
    medledger_sdk::rotation::rotate_category(peers, wallet, &mut ca, keys, category, now_unix())
        .await
}

/// Rotates the key of each category (only `only`, when given) whose reader who held it lost
/// access since its epoch began (medledger_sdk::rotation::rotation_due), from one agreed
/// reading of the record's keys and permissions: the rotations made, and each category's
/// epoch on the ledger after them. What the patient's client does on each grant and
/// listing, so a grant that simply ended rotates its key at the patient's next look.
async fn rotate_due(
    cli: &Cli,
    wallet: &Wallet,
    peers: &PeerSet,
    keys: &mut RecordKeys,
    only: Option<&str>,
) -> Result<
    (
        Vec<medledger_sdk::rotation::Rotation>,
        std::collections::BTreeMap<String, u32>,
    ),
    ClientError,
> {
    let (record, _): (v1::GetRecordResult, _) = peers
        .query_agreed_at("get_record", keys.patient_args())
        .await?;
    let (list, _): (v1::PermissionList, _) = peers
        .query_agreed_at("list_permissions", keys.patient_args())
        .await?;
    let now = now_unix();
    let mut rotations = Vec::new();
    let mut epochs = std::collections::BTreeMap::new();
    for key in &record.category_keys {
        if only.is_some_and(|c| c != key.category) {
            continue;
        }
        let mut epoch = key.epoch;
        if medledger_sdk::rotation::rotation_due(&list.permissions, key, now) {
            let rotation = rotate(cli, wallet, peers, keys, &key.category).await?;
            epoch = rotation.epoch;
            rotations.push(rotation);
        }
        epochs.insert(key.category.clone(), epoch);
    }
    Ok((rotations, epochs))
}

fn rotation_text(r: &medledger_sdk::rotation::Rotation) -> String {
    let mut text = format!(
        "rotated the key of {} to epoch {} in block {}: new items use it; {} reader(s) keep \
         access ({})",
        r.category,
        r.epoch,
        r.committed.block,
        r.kept.len(),
        r.kept.join(", ")
    );
    for (name, why) in &r.left {
        text.push_str(&format!("\n  {name} keeps only the earlier items: {why}"));
    }
    text
}

fn rotation_json(r: &medledger_sdk::rotation::Rotation) -> serde_json::Value {
    json!({"category": r.category, "epoch": r.epoch, "block": r.committed.block,
           "kept": r.kept, "left": r.left.iter().map(|(n, w)| json!({"name": n, "why": w})).collect::<Vec<_>>()})
}

/// The wallet a patient acts under on their record (issue 20 item 2): the record credential
/// the wallet holds (renewed first when due, as [`open_wallet`] does), so that no peer sees
/// the enrollment name next to the record; else the wallet itself (a clinician's, or a record
/// registered before record credentials, under the enrollment name).
async fn acting_wallet(cli: &Cli, wallet: Wallet) -> Result<Wallet, ClientError> {
    if !record_credential::has_record_credential(&wallet) {
        return Ok(wallet);
    }
    // Renewed through the enrollment, which the CA alone sees: a credential lasts a day.
    match record_credential::current(&wallet, &ca_url(cli, Some(&wallet))).await {
        Ok((record, renewed)) => {
            if renewed {
                eprintln!("renewed the record credential (it was due; same keys)");
            }
            Ok(record)
        }
        Err(e) => {
            eprintln!(
                "the record credential is due for renewal, which failed ({e}); going on with it"
            );
            Wallet::open(&record_credential::record_wallet_dir(&wallet))
        }
    }
}

/// The wallet's own record keys and the peers: what every command on one's record needs.
async fn own_record(cli: &Cli, wallet: &Wallet) -> Result<(RecordKeys, PeerSet), ClientError> {
    let keys = RecordKeys::open(wallet)?;
    Ok((keys, peers(cli, wallet).await?))
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
    let enrollment = open_wallet(cli).await?;
    if let PatientCommand::Init { .. } = command
        && !record_credential::has_record_credential(&enrollment)
    {
        if enrollment.dir.join("record-keys.json").exists() {
            return Err(ClientError::wallet(
                &enrollment.dir,
                "already holds a patient record's keys (record-keys.json)",
            ));
        }
        // The credential the record will be registered and used under: the peers never
        // see this wallet's name next to it.
        record_credential::obtain(&enrollment, &ca_url(cli, Some(&enrollment))).await?;
    }
    let enrollment_dir = enrollment.dir.clone();
    let wallet = acting_wallet(cli, enrollment).await?;
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
                .submit(
                    "register_patient",
                    keys.register_args(&wallet.signing).encode_to_vec(),
                )
                .await?
                .into_valid()?;
            let pseudonym = hex::encode(keys.pseudonym);
            Ok(Output {
                text: format!(
                    "registered your record in block {}\n  pseudonym: {pseudonym}\n  categories: {}\n  acting as: {} (a record credential: the ledger never sees your name)\n  keys: {}",
                    committed.block,
                    categories.join(", "),
                    wallet.info.name,
                    wallet.dir.join("record-keys.json").display()
                ),
                json: json!({"pseudonym": pseudonym, "block": committed.block, "categories": categories, "credential": wallet.info.name}),
            })
        }
        PatientCommand::Revoke { permission } => {
            let (mut keys, peers) = own_record(cli, &wallet).await?;
            let committed = peers
                .submit(
                    "revoke",
                    v1::RevokeArgs {
                        pseudonym: keys.pseudonym.to_vec(),
                        permission_id: permission.clone(),
                    }
                    .encode_to_vec(),
                )
                .await?
                .into_valid()?;
            let mut text = format!(
                "revoked permission {permission} in block {}; from this block on it opens nothing",
                committed.block
            );
            // Keys follow consent (issue 19 item 3): a revoked reader kept the category key,
            // so new items go to a new one. What was revoked comes with the commit proof.
            let ended = v1::RevokeResult::decode(committed.result.as_slice()).unwrap_or_default();
            let held_key = !ended.category.is_empty()
                && ended
                    .rights
                    .iter()
                    .any(|r| *r == v1::Right::Read as i32 || *r == v1::Right::Share as i32)
                && ended.key_epoch > 0;
            let mut rotated = serde_json::Value::Null;
            if held_key {
                let rotation = rotate(cli, &wallet, &peers, &mut keys, &ended.category).await?;
                text.push_str(&format!("\n{}", rotation_text(&rotation)));
                rotated = rotation_json(&rotation);
            }
            Ok(Output {
                text,
                json: json!({"permission": permission, "block": committed.block, "rotated": rotated}),
            })
        }
        PatientCommand::Rotate { category } => {
            let (mut keys, peers) = own_record(cli, &wallet).await?;
            let rotation = rotate(cli, &wallet, &peers, &mut keys, category).await?;
            Ok(Output {
                text: rotation_text(&rotation),
                json: rotation_json(&rotation),
            })
        }
        PatientCommand::Permissions => {
            let (mut keys, peers) = own_record(cli, &wallet).await?;
            let (rotations, _) = rotate_due(cli, &wallet, &peers, &mut keys, None).await?;
            let (list, height): (v1::PermissionList, _) = peers
                .query_agreed_at("list_permissions", keys.patient_args())
                .await?;
            let mut output = permissions_output(&list.permissions).reflecting(height);
            for rotation in &rotations {
                output
                    .text
                    .push_str(&format!("\n{}", rotation_text(rotation)));
            }
            Ok(output)
        }
        PatientCommand::Items => {
            let (keys, peers) = own_record(cli, &wallet).await?;
            let (list, height): (v1::ItemList, _) = peers
                .query_agreed_at("list_items", keys.patient_args())
                .await?;
            Ok(items_output(&list.items).reflecting(height))
        }
        PatientCommand::Audit { format } => {
            let (keys, peers) = own_record(cli, &wallet).await?;
            let mut entries = audit_trail(&peers, &keys.pseudonym).await?;
            let record_key = keys.record_encryption_key();
            let wanted: Vec<(u64, Vec<u8>)> = entries
                .iter()
                .filter(|e| !e.sealed_reason_commitment.is_empty())
                .map(|e| (e.seq, e.sealed_reason_commitment.clone()))
                .collect();
            // The trail stands without its reasons: peers that refuse or lack them cost
            // only the words, each entry saying why they are missing.
            let (mut private, refused) = match peers.sealed_reasons(&keys.pseudonym, &wanted).await
            {
                Ok(private) => (private, None),
                Err(e) => (Default::default(), Some(reasons::not_available(e.kind()))),
            };
            for e in &mut entries {
                if !e.sealed_reason_commitment.is_empty() {
                    // Ledger format 7: the sealed words are private data (docs/adr/0017).
                    match private.remove(&e.seq) {
                        Some(GatheredReason::Sealed(sealed)) => e.sealed_reason = Some(sealed),
                        Some(GatheredReason::NotASealedText) => {
                            e.reason = reasons::NOT_A_SEALED_TEXT.to_string();
                            continue;
                        }
                        Some(GatheredReason::Refused(kind)) => {
                            e.reason = reasons::not_available(kind);
                            continue;
                        }
                        None => {
                            e.reason = refused
                                .clone()
                                .unwrap_or_else(|| reasons::UNAVAILABLE.to_string());
                            continue;
                        }
                    }
                }
                if e.sealed_reason.is_none() {
                    // Words an older build stored in clear: shown, neutralised.
                    e.reason = reasons::neutralised(&e.reason);
                } else {
                    e.reason = reasons::shown(
                        e.sealed_reason.as_ref(),
                        &keys.pseudonym,
                        &e.category,
                        &e.actor,
                        [&record_key],
                    );
                }
            }
            let fhir = audit_fhir(&keys.pseudonym, &entries);
            Ok(match format {
                AuditFormat::Fhir => Output {
                    text: serde_json::to_string_pretty(&fhir).unwrap_or_default(),
                    json: fhir,
                },
                AuditFormat::Text => Output {
                    text: audit_text(&entries),
                    json: json!({"entries": entries.iter().map(|e| json!({
                        "seq": e.seq, "time": format_time(e.time), "actor": e.actor,
                        "role": e.actor_role, "action": action_name(e.action),
                        "outcome": if e.outcome == v1::Outcome::Denied as i32 { "denied" } else { "allowed" },
                        "category": e.category, "item": e.item, "reason": e.reason,
                        "emergency": e.emergency, "study": e.study_id,
                        "permission": e.permission_id, "tx_id": hex::encode(&e.tx_id),
                        "repeats": e.repeats,
                        "last_time": (e.repeats > 0).then(|| format_time(e.last_time)),
                        "incident": v1::StudyIncident::try_from(e.incident)
                            .map(|i| i.as_str_name().trim_start_matches("STUDY_INCIDENT_").to_lowercase())
                            .unwrap_or_else(|_| "unknown".into()),
                    })).collect::<Vec<_>>()}),
                },
            })
        }
        PatientCommand::Erase { yes } => {
            if !yes {
                return Err(ClientError::Usage(
                    "erasure cannot be undone: every item and study copy is deleted and this wallet's record keys are destroyed. Run again with --yes".into(),
                ));
            }
            let (keys, peers) = own_record(cli, &wallet).await?;
            let mut gateway = files::connect_gateway(
                &wallet,
                cli.gateway.as_deref().unwrap_or(DEFAULT_GATEWAY),
                peers.revocations(),
            )
            .await?;
            let (committed, deleted) = files::erase(&peers, &mut gateway, keys.pseudonym).await?;
            // The credential's certificate first: if this stops half-way, no later `init`
            // finds a credential to register a new record under (it would sign both).
            record_credential::disable(&enrollment_dir)?;
            keys.destroy()?;
            // The credential goes with the record: kept, it would sign the next record too.
            record_credential::discard(&enrollment_dir)?;
            Ok(Output {
                text: format!(
                    "erased the record in block {}: {} object(s) deleted, record keys destroyed",
                    committed.block,
                    deleted.len()
                ),
                json: json!({"block": committed.block, "deleted_paths": deleted}),
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
            until,
            days,
            seconds,
            study,
            anonymize,
        } => {
            let (mut keys, peers) = own_record(cli, &wallet).await?;
            // Keys follow consent, on the next use (issue 19 item 3): a reader whose grant
            // ended since the key's epoch began still holds it, so it is rotated before this
            // grant wraps it again; the envelope is of the ledger's epoch after that.
            let (rotations, epochs) =
                rotate_due(cli, &wallet, &peers, &mut keys, Some(category)).await?;
            let rotated = rotations.into_iter().next();
            let epoch = epochs.get(category.as_str()).copied().unwrap_or(0);
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
                // A certificate the ledger revoked receives no key.
                let identity = medledger_crypto::validate_enrollment_certificate(
                    &der,
                    &wallet.root()?,
                    now_unix(),
                    peers.revocations(),
                )
                .map_err(|e| ClientError::Protocol(format!("{to}'s certificate: {e}")))?;
                keys.envelope_at(&identity.encryption_key, category, epoch)?
            } else {
                Vec::new()
            };
            // "Now" and lengths are resolved by the ledger at commit, in consensus time, so
            // this machine's clock does not shape the window; only times written out are
            // sent as they are.
            let (from, from_commit) = match from {
                Some(t) => (time_arg("--from", t)?, false),
                None => (0, true),
            };
            let (until, duration_seconds) = match (until, days, seconds) {
                (Some(t), _, _) => (time_arg("--until", t)?, 0),
                // Saturating: an absurd length reaches the ledger as an absurd window,
                // which the chaincode refuses with INVALID_ARGUMENT.
                (None, Some(d), _) => (0, i64::from(*d).saturating_mul(86_400)),
                (None, None, Some(s)) => (0, *s),
                (None, None, None) => (0, 30 * 86_400),
            };
            if duration_seconds <= 0 && until == 0 {
                return Err(ClientError::Usage(
                    "--days and --seconds: a window lasts at least one second".into(),
                ));
            }
            // The study pseudonym with the proof that this patient owns it (docs/adr/0014).
            let (study_pseudonym, study_owner_key, study_owner_signature) = study
                .as_deref()
                .map(|s| keys.study_grant(s))
                .unwrap_or_default();
            let mut grant = v1::GrantArgs {
                pseudonym: keys.pseudonym.to_vec(),
                grantee: to.clone(),
                category: category.clone(),
                rights: rights.iter().map(|r| *r as i32).collect(),
                from,
                until,
                key_envelope,
                study_id: study.clone().unwrap_or_default(),
                anonymize: *anonymize,
                study_pseudonym,
                from_commit,
                duration_seconds,
                study_owner_key,
                study_owner_signature,
                ..Default::default()
            };
            // A ledger that keeps private data takes the envelope beside the transaction,
            // and only its commitment in it (docs/adr/0017).
            let private = peers.grant_envelope_private(&mut grant);
            let committed = peers
                .submit_maybe_private("grant", grant.encode_to_vec(), &private)
                .await?
                .into_valid()?;
            let v1::GrantResult { id, from, until } =
                v1::GrantResult::decode(committed.result.as_slice()).unwrap_or_default();
            Ok(Output {
                text: format!(
                    "granted {to} {} on {category}{} from {} until {} (permission {id}, block {})",
                    rights
                        .iter()
                        .map(|r| r.as_str_name().trim_start_matches("RIGHT_").to_lowercase())
                        .collect::<Vec<_>>()
                        .join("+"),
                    match study {
                        Some(s) if *anonymize => format!(" for study {s}, anonymized"),
                        Some(s) => format!(" for study {s}"),
                        None => String::new(),
                    },
                    format_time(from),
                    format_time(until),
                    committed.block
                ) + &rotated
                    .as_ref()
                    .map(|r| format!("\n(first {})", rotation_text(r)))
                    .unwrap_or_default(),
                json: json!({"permission": id, "block": committed.block, "from": from, "until": until,
                             "rotated": rotated.as_ref().map(rotation_json)}),
            })
        }
    }
}

/// `--from`/`--until`: RFC 3339, a date, or Unix seconds.
fn time_arg(flag: &str, text: &str) -> Result<i64, ClientError> {
    if let Ok(unix) = text.parse::<i64>() {
        return Ok(unix);
    }
    parse_time(text)
        .map_err(|e| ClientError::Usage(format!("{flag}: {e}")))?
        .ok_or_else(|| ClientError::Usage(format!("{flag} needs a time")))
}

fn rights_text(rights: &[i32]) -> String {
    rights
        .iter()
        .filter_map(|r| v1::Right::try_from(*r).ok())
        .map(|r| r.as_str_name().trim_start_matches("RIGHT_").to_lowercase())
        .collect::<Vec<_>>()
        .join("+")
}

fn permission_state(p: &v1::Permission, now: i64) -> &'static str {
    if p.revoked {
        "revoked"
    } else if now < p.from {
        "not started"
    } else if now >= p.until {
        "expired"
    } else {
        "live"
    }
}

fn permissions_output(list: &[v1::Permission]) -> Output {
    let now = now_unix();
    let mut text = format!("{} permission(s)", list.len());
    for p in list {
        text.push_str(&format!(
            "\n  {:<8} {:<14} {:<22} {:<16} {} .. {}  {}{}{}{}",
            p.id,
            p.grantee,
            p.category,
            rights_text(&p.rights),
            format_time(p.from),
            format_time(p.until),
            permission_state(p, now),
            if p.study_id.is_empty() {
                String::new()
            } else {
                format!("  study {}", p.study_id)
            },
            if p.anonymize { " (anonymized)" } else { "" },
            if p.emergency {
                "  EMERGENCY (its reason is on the trail: patient audit)".to_string()
            } else {
                String::new()
            },
        ));
    }
    Output {
        text,
        json: json!({"permissions": list.iter().map(|p| json!({
            "id": p.id, "grantee": p.grantee, "category": p.category,
            "rights": rights_text(&p.rights).split('+').collect::<Vec<_>>(),
            "from": format_time(p.from), "until": format_time(p.until),
            "state": permission_state(p, now), "study": p.study_id, "anonymize": p.anonymize,
            "emergency": p.emergency, "revoked_at": (p.revoked_at != 0).then(|| format_time(p.revoked_at)),
        })).collect::<Vec<_>>()}),
    }
}

fn items_output(list: &[v1::ClinicalItem]) -> Output {
    let mut text = format!("{} item(s)", list.len());
    for i in list {
        text.push_str(&format!(
            "\n  {}  {:<22} {:>10} bytes  by {:<14} {}{}",
            i.id,
            i.category,
            i.size,
            i.uploader,
            format_time(i.created_at),
            if i.tombstoned { "  ERASED" } else { "" }
        ));
    }
    Output {
        text,
        json: json!({"items": list.iter().map(|i| json!({
            "id": i.id, "category": i.category, "size": i.size, "uploader": i.uploader,
            "created_at": format_time(i.created_at), "sha256": hex::encode(&i.sha256),
            "path": i.path, "erased": i.tombstoned,
        })).collect::<Vec<_>>()}),
    }
}

fn action_name(action: i32) -> String {
    v1::AuditAction::try_from(action)
        .map(|a| {
            a.as_str_name()
                .trim_start_matches("AUDIT_ACTION_")
                .to_lowercase()
        })
        .unwrap_or_else(|_| "unknown".into())
}

fn audit_text(entries: &[v1::AuditEntry]) -> String {
    let mut text = format!("{} audit entries", entries.len());
    for e in entries {
        let denied = e.outcome == v1::Outcome::Denied as i32;
        text.push_str(&format!(
            "\n  #{:<4} {}  {:<14} {:<10} {:<16} {:<7} {:<22} {}{}{}{}",
            e.seq,
            format_time(e.time),
            e.actor,
            e.actor_role,
            action_name(e.action),
            if denied { "DENIED" } else { "allowed" },
            e.category,
            e.item,
            if e.study_id.is_empty() {
                String::new()
            } else {
                format!(" study {}", e.study_id)
            },
            if e.emergency { " EMERGENCY" } else { "" },
            match entry_words(e) {
                words if words.is_empty() => String::new(),
                words => format!(" — {words}"),
            },
        ));
        if e.repeats > 0 {
            text.push_str(&format!(
                " (and {} more times, the last at {})",
                e.repeats,
                format_time(e.last_time)
            ));
        }
        if e.incident == v1::StudyIncident::DeidentificationFailed as i32 {
            text.push_str(
                " — INCIDENT: a copy recorded as de-identified failed the researcher's re-check",
            );
        }
    }
    text
}

/// The trail as a FHIR R4 Bundle of AuditEvent resources (DICOM audit codes).
fn audit_fhir(pseudonym: &[u8], entries: &[v1::AuditEntry]) -> serde_json::Value {
    let events: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let action = action_name(e.action);
            let code = match action.as_str() {
                "access" | "study_access" | "emergency_access" => "R",
                "register" | "add_item" | "share" => "C",
                "erase" => "D",
                _ => "U",
            };
            let denied = e.outcome == v1::Outcome::Denied as i32;
            let mut event = json!({
                "resourceType": "AuditEvent",
                "id": format!("{}-{}", &hex::encode(pseudonym)[..16], e.seq),
                "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110", "display": "Patient Record"},
                "subtype": [{"system": "urn:medledger:audit-action", "code": action}],
                "action": code,
                "recorded": format_time(e.time),
                "outcome": if denied { "4" } else { "0" },
                "agent": [{
                    "type": {"coding": [{"system": "urn:medledger:role", "code": e.actor_role}]},
                    "who": {"identifier": {"system": "urn:medledger:enrollment", "value": e.actor}},
                    "requestor": true,
                }],
                "source": {"observer": {"identifier": {"system": "urn:medledger:transaction", "value": hex::encode(&e.tx_id)}}},
                "entity": [{
                    "what": {"identifier": {"system": "urn:medledger:pseudonym", "value": hex::encode(pseudonym)}},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                }],
            });
            if !e.item.is_empty()
                && let Some(entities) = event["entity"].as_array_mut()
            {
                    entities.push(json!({
                    "what": {"identifier": {"system": "urn:medledger:item", "value": e.item}},
                    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                    "detail": [{"type": "category", "valueString": e.category}],
                }));
            }
            let words = entry_words(e);
            if !words.is_empty() {
                event["outcomeDesc"] = json!(words);
            }
            if e.emergency {
                event["purposeOfEvent"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "ETREAT", "display": "Emergency Treatment"}]}]);
            }
            if !e.study_id.is_empty() {
                event["purposeOfEvent"] = json!([{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH", "display": "healthcare research"}], "text": format!("study {}", e.study_id)}]);
            }
            json!({"resource": event})
        })
        .collect();
    json!({"resourceType": "Bundle", "type": "collection", "entry": events})
}

/// The whole trail, page by page.
async fn audit_trail(
    peers: &PeerSet,
    pseudonym: &[u8],
) -> Result<Vec<v1::AuditEntry>, ClientError> {
    let mut entries = Vec::new();
    let mut after = 0;
    loop {
        let page: v1::AuditTrail = peers
            .query_agreed_as(
                "audit_trail",
                v1::AuditTrailArgs {
                    pseudonym: pseudonym.to_vec(),
                    after_seq: after,
                    limit: 0,
                },
            )
            .await?;
        entries.extend(page.entries);
        if page.next_after_seq == 0 {
            return Ok(entries);
        }
        after = page.next_after_seq;
    }
}

/// The record a clinician command acts on, if it names one.
fn clinician_target(command: &ClinicianCommand) -> Option<&str> {
    match command {
        ClinicianCommand::Upload { patient, .. }
        | ClinicianCommand::Download { patient, .. }
        | ClinicianCommand::Items { patient }
        | ClinicianCommand::Share { patient, .. }
        | ClinicianCommand::Emergency { patient, .. } => Some(patient),
        ClinicianCommand::Patients => None,
    }
}

/// Whether `patient` (the command's hex pseudonym) is the record of `enrollment`'s record
/// credential.
fn is_own_record(enrollment: &Wallet, patient: &str) -> bool {
    let Ok(target) = pseudonym_arg(patient) else {
        return false;
    };
    Wallet::open(&record_credential::record_wallet_dir(enrollment))
        .and_then(|credential| RecordKeys::open(&credential))
        .is_ok_and(|keys| keys.pseudonym == target)
}

pub async fn run_clinician(cli: &Cli, command: &ClinicianCommand) -> Result<Output, ClientError> {
    // A patient storing or reading their own items does it as their record credential; on
    // anyone else's record as their enrollment: the credential acting there would put its
    // name on that record's trail (a refusal is audited too), next to whoever asked them to.
    let enrollment = open_wallet(cli).await?;
    let wallet = if clinician_target(command).is_some_and(|p| is_own_record(&enrollment, p)) {
        acting_wallet(cli, enrollment).await?
    } else {
        enrollment
    };
    let peers = peers(cli, &wallet).await?;
    let gateway_address = cli.gateway.as_deref().unwrap_or(DEFAULT_GATEWAY);
    match command {
        ClinicianCommand::Patients => {
            let (list, height): (v1::PatientList, _) = peers
                .query_agreed_at("list_patients_for_grantee", v1::Empty {})
                .await?;
            let pseudonyms: Vec<String> = list.pseudonyms.iter().map(hex::encode).collect();
            Ok(Output {
                text: format!(
                    "{} record(s) with a live permission for {}{}",
                    pseudonyms.len(),
                    wallet.info.name,
                    pseudonyms
                        .iter()
                        .map(|p| format!("\n  {p}"))
                        .collect::<String>()
                ),
                json: json!({"patients": pseudonyms}),
            }
            .reflecting(height))
        }
        ClinicianCommand::Items { patient } => {
            let (list, height): (v1::ItemList, _) = peers
                .query_agreed_at(
                    "list_items",
                    v1::PatientArgs {
                        pseudonym: pseudonym_arg(patient)?.to_vec(),
                    },
                )
                .await?;
            Ok(items_output(&list.items).reflecting(height))
        }
        ClinicianCommand::Emergency {
            patient,
            category,
            reason,
            minutes,
        } => {
            let pseudonym = pseudonym_arg(patient)?;
            let committed = emergency_access(
                &peers,
                &pseudonym,
                category,
                (&wallet.info.name, reason),
                minutes.map(|m| m * 60),
            )
            .await?;
            let id = v1::IdResult::decode(committed.result.as_slice())
                .map(|r| r.id)
                .unwrap_or_default();
            Ok(Output {
                text: format!(
                    "EMERGENCY access to {category} recorded in block {} (permission {id}); the patient's trail flags it",
                    committed.block
                ),
                json: json!({"permission": id, "block": committed.block, "category": category}),
            })
        }
        ClinicianCommand::Share {
            patient,
            study,
            item,
            anonymize,
        } => {
            let mut gateway =
                files::connect_gateway(&wallet, gateway_address, peers.revocations()).await?;
            let shared = medledger_sdk::research::share(
                &peers,
                &mut gateway,
                &wallet,
                pseudonym_arg(patient)?,
                item,
                study,
                *anonymize,
            )
            .await?;
            Ok(Output {
                text: format!(
                    "shared item {item} ({}) into study {study} as {}{} (block {}); read recorded in block {}",
                    shared.category,
                    shared.uploaded.item_id,
                    if shared.anonymized {
                        ", de-identified"
                    } else {
                        ""
                    },
                    shared.uploaded.committed.block,
                    shared.read_block
                ),
                json: json!({
                    "study": study, "source_item": item, "item": shared.uploaded.item_id,
                    "path": shared.uploaded.path, "anonymized": shared.anonymized,
                    "block": shared.uploaded.committed.block, "read_block": shared.read_block,
                }),
            })
        }
        ClinicianCommand::Upload {
            patient,
            category,
            file,
        } => {
            let pseudonym = pseudonym_arg(patient)?;
            let own = RecordKeys::open(&wallet)
                .ok()
                .filter(|k| k.pseudonym == pseudonym);
            let mut gateway =
                files::connect_gateway(&wallet, gateway_address, peers.revocations()).await?;
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
        ClinicianCommand::Download {
            patient,
            item,
            output,
        } => {
            let pseudonym = pseudonym_arg(patient)?;
            let own = RecordKeys::open(&wallet)
                .ok()
                .filter(|k| k.pseudonym == pseudonym);
            let mut gateway =
                files::connect_gateway(&wallet, gateway_address, peers.revocations()).await?;
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

pub async fn run_researcher(cli: &Cli, command: &ResearcherCommand) -> Result<Output, ClientError> {
    let wallet = open_wallet(cli).await?;
    let peers = peers(cli, &wallet).await?;
    let ResearcherCommand::Study(command) = command;
    match command {
        StudyCommand::Create {
            id,
            title,
            protocol,
        } => {
            let document = match protocol {
                Some(path) => std::fs::read(path)
                    .map_err(|e| ClientError::Usage(format!("{}: {e}", path.display())))?,
                None => title.as_bytes().to_vec(),
            };
            let committed =
                medledger_sdk::research::create_study(&peers, &wallet, id, title, &document)
                    .await?;
            Ok(Output {
                text: format!(
                    "registered study {id} ({title}) in block {}; its key is in {}",
                    committed.block,
                    wallet.dir.join("study-keys.json").display()
                ),
                json: json!({"study": id, "block": committed.block}),
            })
        }
        StudyCommand::List => {
            let (list, height): (v1::StudyList, _) =
                peers.query_agreed_at("list_studies", v1::Empty {}).await?;
            Ok(Output {
                text: format!(
                    "{} stud(ies){}",
                    list.studies.len(),
                    list.studies
                        .iter()
                        .map(|s| format!(
                            "\n  {:<16} {}  (registered {} by {})",
                            s.id,
                            s.title,
                            format_time(s.registered_at),
                            s.researcher
                        ))
                        .collect::<String>()
                ),
                json: json!({"studies": list.studies.iter().map(|s| json!({
                    "id": s.id, "title": s.title, "researcher": s.researcher,
                    "registered_at": format_time(s.registered_at),
                    "protocol_sha256": hex::encode(&s.protocol_hash),
                })).collect::<Vec<_>>()}),
            }
            .reflecting(height))
        }
        StudyCommand::Fetch { study, output } => {
            let mut gateway = files::connect_gateway(
                &wallet,
                cli.gateway.as_deref().unwrap_or(DEFAULT_GATEWAY),
                peers.revocations(),
            )
            .await?;
            let medledger_sdk::research::StudyFetch {
                fetched,
                refused,
                unavailable,
            } = medledger_sdk::research::fetch(&peers, &mut gateway, &wallet, study, output)
                .await?;
            let mut text = format!(
                "fetched {} item(s) of study {study} into {} (each access recorded)",
                fetched.len(),
                output.display()
            );
            for f in &fetched {
                text.push_str(&format!(
                    "\n  {}  {}{}  block {}",
                    f.file.display(),
                    f.item.category,
                    if f.item.anonymized {
                        ", de-identified"
                    } else {
                        ""
                    },
                    f.block
                ));
            }
            for r in &refused {
                text.push_str(&format!(
                    "\n  REFUSED {}: recorded as de-identified, but {}; nothing written, incident \
                     recorded on the patient's trail in block {}",
                    r.item.item_id, r.why, r.incident_block
                ));
            }
            for u in &unavailable {
                text.push_str(&format!(
                    "\n  UNAVAILABLE {}: no peer gave its file key ({}); nothing fetched, no \
                     access recorded: fetch again later",
                    u.item.item_id, u.why
                ));
            }
            Ok(Output {
                text,
                json: json!({"study": study, "items": fetched.iter().map(|f| json!({
                    "item": f.item.item_id, "file": f.file, "category": f.item.category,
                    "anonymized": f.item.anonymized, "study_pseudonym": hex::encode(&f.item.study_pseudonym),
                    "block": f.block,
                })).collect::<Vec<_>>(),
                "refused": refused.iter().map(|r| json!({
                    "item": r.item.item_id, "why": r.why, "incident_block": r.incident_block,
                    "study_pseudonym": hex::encode(&r.item.study_pseudonym),
                })).collect::<Vec<_>>(),
                "unavailable": unavailable.iter().map(|u| json!({
                    "item": u.item.item_id, "why": u.why,
                    "study_pseudonym": hex::encode(&u.item.study_pseudonym),
                })).collect::<Vec<_>>()}),
            })
        }
    }
}

/// Breaks the glass: the reason sealed on this machine to the readers the ledger names
/// (`reasons::readers`, f+1 peers agreeing), then the transaction. Asked once more when the
/// readers changed in between (an auditor named or removed): the chaincode says so.
async fn emergency_access(
    peers: &PeerSet,
    pseudonym: &[u8],
    category: &str,
    (author, reason): (&str, &str),
    duration_seconds: Option<i64>,
) -> Result<medledger_sdk::peer::Committed, ClientError> {
    let mut readers = reasons::readers(peers, pseudonym).await?;
    let mut asked_again = false;
    loop {
        let mut args = v1::EmergencyAccessArgs {
            pseudonym: pseudonym.to_vec(),
            category: category.to_string(),
            sealed_reason: Some(reasons::seal(
                reason, pseudonym, category, author, &readers,
            )?),
            duration_seconds: duration_seconds.unwrap_or(0),
            ..Default::default()
        };
        // From ledger format 7 the sealed words go beside the transaction, never in a block.
        let private = peers.emergency_reason_private(&mut args);
        let committed = peers
            .submit_maybe_private("emergency_access", args.encode_to_vec(), &private)
            .await?;
        if !asked_again && !committed.is_valid() {
            asked_again = true;
            let now = reasons::readers(peers, pseudonym).await?;
            if now != readers {
                readers = now;
                continue;
            }
        }
        return committed.into_valid();
    }
}

/// The words for an audit entry: a denial's, rendered from its code, or the caller's own
/// reason (an emergency access, opened by this client into the entry's `reason`).
fn entry_words(e: &v1::AuditEntry) -> String {
    match &e.denied {
        Some(denied) => medledger_chaincode::describe_denial(denied),
        None => e.reason.clone(),
    }
}
