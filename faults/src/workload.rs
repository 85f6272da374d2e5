//! The clinical workload with a history: pairs of a patient and a clinician, each pair one
//! client doing grants, revokes, uploads' `add_item` and `record_access` one after the other,
//! every invocation recorded with its transaction id, its times and its outcome:
//! acknowledged (a commit proof: block and status) or unknown (no proof: an error or no
//! answer in time). After each acknowledged grant or revoke the patient reads the permission
//! back, asking every peer at least at the height of the commit (f+1 must agree): a revoked
//! permission read as live, or a granted one as missing, is a violation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use medledger_devnet::{Layout, ensure_identity};
use medledger_proto::v1;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::private_data::PrivateData;
use prost::Message;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

const CATEGORY: &str = "lab-results";
/// Longest an invocation may take before it counts as unknown.
pub const INVOCATION_TIMEOUT: Duration = Duration::from_secs(45);

/// What became of one invocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// A commit proof checked: the transaction is in `block` with `status`.
    Acknowledged { block: u64, status: String },
    /// No proof: it may or may not have committed.
    Unknown { error: String },
}

/// One invocation of the history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Invocation {
    pub client: usize,
    pub function: String,
    /// The transaction id (hex).
    pub tx_id: String,
    /// Milliseconds since the episode started.
    pub start_ms: u64,
    pub end_ms: u64,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// What the clients recorded.
#[derive(Default)]
pub struct History {
    pub invocations: std::sync::Mutex<Vec<Invocation>>,
    /// Read-your-writes failures, in words.
    pub violations: std::sync::Mutex<Vec<String>>,
}

/// One patient and the clinician it granted read and write, as one client.
struct Pair {
    index: usize,
    patient: PeerSet,
    clinician: PeerSet,
    pseudonym: Vec<u8>,
    items: Vec<String>,
    /// Permissions this pair's patient granted and has not revoked: (grantee, id).
    live: Vec<(String, String)>,
    next: u64,
}

/// Enrolls `count` pairs and sets each up (register, a read-write grant, one item).
///
/// # Errors
/// A setup step failed (the network is healthy during setup).
pub async fn setup(layout: &Layout, count: usize) -> anyhow::Result<Vec<PairHandle>> {
    let admin = medledger_sdk::wallet::Wallet::open(&layout.admin_wallet())?;
    let mut pairs = Vec::new();
    for index in 0..count {
        let patient = ensure_identity(
            layout,
            &admin,
            &format!("patient{index}"),
            "patient",
            vec![],
        )
        .await?;
        let clinician_name = format!("clinician{index}");
        let clinician =
            ensure_identity(layout, &admin, &clinician_name, "clinician", vec![]).await?;
        let patient = PeerSet::connect(&patient, layout.first_peer()).await?;
        let clinician = PeerSet::connect(&clinician, layout.first_peer()).await?;
        let mut pseudonym = [0u8; 32];
        rand::thread_rng().fill(&mut pseudonym);
        let register = v1::RegisterPatientArgs {
            pseudonym: pseudonym.to_vec(),
            // Only its shape is the ledger's to check; no reason is sealed to it.
            owner_encryption_key: vec![7; 32],
            category_keys: vec![v1::CategoryKey {
                category: CATEGORY.into(),
                public_key: vec![7; 32],
                // Only its length is the ledger's to check; nothing is encrypted to it.
                owner_signature: vec![7; 64],
                ..Default::default()
            }],
        };
        patient
            .submit("register_patient", register.encode_to_vec())
            .await?
            .into_valid()?;
        let mut grant = v1::GrantArgs {
            pseudonym: pseudonym.to_vec(),
            grantee: clinician_name,
            category: CATEGORY.into(),
            rights: vec![v1::Right::Read as i32, v1::Right::Write as i32],
            // The window opens at commit, in consensus time: no clock of ours shapes it.
            from_commit: true,
            duration_seconds: 86_400,
            key_envelope: vec![0x5a; 80],
            ..Default::default()
        };
        let private = patient.grant_envelope_private(&mut grant);
        patient
            .submit_maybe_private("grant", grant.encode_to_vec(), &private)
            .await?
            .into_valid()?;
        let mut pair = Pair {
            index,
            patient,
            clinician,
            pseudonym: pseudonym.to_vec(),
            items: Vec::new(),
            live: Vec::new(),
            next: 0,
        };
        let (function, args, private) = pair.add_item();
        pair.clinician
            .submit_maybe_private(function, args, &private)
            .await?
            .into_valid()?;
        pairs.push(PairHandle(pair));
    }
    Ok(pairs)
}

/// A set-up pair, ready to run.
pub struct PairHandle(Pair);

impl Pair {
    fn add_item(&mut self) -> (&'static str, Vec<u8>, PrivateData) {
        let n = self.next;
        self.next += 1;
        let item_id = format!("item-{n}");
        self.items.push(item_id.clone());
        let mut sha256 = [0u8; 32];
        sha256[..8].copy_from_slice(&n.to_be_bytes());
        let mut args = v1::AddItemArgs {
            pseudonym: self.pseudonym.clone(),
            path: format!(
                "patients/{}/{CATEGORY}/{item_id}",
                hex::encode(&self.pseudonym)
            ),
            item_id,
            category: CATEGORY.into(),
            sha256: sha256.to_vec(),
            size: 1_000,
            wrapped_dek: vec![0x5a; 80],
            key_epoch: 1,
            ..Default::default()
        };
        // The wrapped file key as private data on a ledger that keeps it (docs/adr/0017).
        let private = self.clinician.item_key_private(&mut args);
        ("add_item", args.encode_to_vec(), private)
    }

    /// Whether the ledger, read at least at this client's last commit with f+1 peers
    /// agreeing, says `grantee` may read now; `None` when no such answer came in time.
    async fn may_read(&self, grantee: &str) -> Option<bool> {
        let args = v1::CheckAccessArgs {
            pseudonym: self.pseudonym.clone(),
            grantee: grantee.to_string(),
            category: CATEGORY.into(),
            right: v1::Right::Read as i32,
            ..Default::default()
        };
        let answer = tokio::time::timeout(
            Duration::from_secs(20),
            self.patient
                .query_agreed_as::<v1::CheckAccessResult>("check_access", args),
        )
        .await;
        match answer {
            Ok(Ok(result)) => Some(result.allowed),
            _ => None,
        }
    }
}

/// Runs every pair until `stop`, recording into `history`; `seed` steers each client's
/// choices.
pub async fn run(
    pairs: Vec<PairHandle>,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for PairHandle(pair) in pairs {
        let stop = stop.clone();
        let history = history.clone();
        tasks.spawn(client(pair, seed, started, stop, history));
    }
    while tasks.join_next().await.is_some() {}
}

async fn client(
    mut pair: Pair,
    seed: u64,
    started: Instant,
    stop: Arc<AtomicBool>,
    history: Arc<History>,
) {
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(seed ^ (pair.index as u64).wrapping_mul(0x9e37_79b9));
    while !stop.load(Ordering::SeqCst) {
        let roll = rng.gen_range(0..100);
        let grantee = format!("grantee-{}-{}", pair.index, pair.next);
        let mut private = pair.patient.private_data();
        let (by_patient, function, args, revoked) = if roll < 30 {
            pair.next += 1;
            let mut args = v1::GrantArgs {
                pseudonym: pair.pseudonym.clone(),
                grantee: grantee.clone(),
                category: CATEGORY.into(),
                rights: vec![v1::Right::Read as i32],
                // The window opens at commit, in consensus time: no clock of ours shapes it.
                from_commit: true,
                duration_seconds: 86_400,
                key_envelope: vec![0x5a; 80],
                ..Default::default()
            };
            private = pair.patient.grant_envelope_private(&mut args);
            (true, "grant", args.encode_to_vec(), None)
        } else if roll < 50 && !pair.live.is_empty() {
            let (grantee, id) = pair.live.swap_remove(rng.gen_range(0..pair.live.len()));
            let args = v1::RevokeArgs {
                pseudonym: pair.pseudonym.clone(),
                permission_id: id.clone(),
            };
            (true, "revoke", args.encode_to_vec(), Some((grantee, id)))
        } else if roll < 80 {
            let (function, args, values) = pair.add_item();
            private = values;
            (false, function, args, None)
        } else {
            let item_id = pair.items[rng.gen_range(0..pair.items.len())].clone();
            let args = v1::RecordAccessArgs {
                pseudonym: pair.pseudonym.clone(),
                item_id,
            };
            (false, "record_access", args.encode_to_vec(), None)
        };
        let peers = if by_patient {
            &pair.patient
        } else {
            &pair.clinician
        };
        // The private values go to the peers first: nothing is submitted (nor recorded)
        // when too few acknowledge them, as a real client would find.
        let (tx_id, envelope) = match peers.signed_private(function, args, &private).await {
            Ok(signed) => signed,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
                continue;
            }
        };
        let start_ms = started.elapsed().as_millis() as u64;
        let outcome =
            tokio::time::timeout(INVOCATION_TIMEOUT, peers.submit_envelope(envelope)).await;
        let end_ms = started.elapsed().as_millis() as u64;
        let (outcome, committed) = match outcome {
            Ok(Ok(c)) => (
                Outcome::Acknowledged {
                    block: c.block,
                    status: c.status.as_str_name().to_string(),
                },
                Some(c),
            ),
            Ok(Err(e)) => (
                Outcome::Unknown {
                    error: short(&e.to_string()),
                },
                None,
            ),
            Err(_) => (
                Outcome::Unknown {
                    error: format!("no outcome within {} s", INVOCATION_TIMEOUT.as_secs()),
                },
                None,
            ),
        };
        record(
            &history,
            Invocation {
                client: pair.index,
                function: function.to_string(),
                tx_id: hex::encode(tx_id),
                start_ms,
                end_ms,
                outcome,
            },
        );
        let Some(committed) = committed else {
            // As a real client would: wait a little before the next try.
            tokio::time::sleep(Duration::from_millis(rng.gen_range(200..600))).await;
            continue;
        };
        if !committed.is_valid() {
            // A revoke that did not commit leaves the permission live (or unknown: it is not
            // revoked again, and not read back).
            continue;
        }
        match function {
            "grant" => {
                let id = v1::IdResult::decode(committed.result.as_slice())
                    .map(|r| r.id)
                    .unwrap_or_default();
                if pair.may_read(&grantee).await == Some(false) {
                    history.violation(format!(
                            "client {}: permission {id} for {grantee}, granted in block {}, read back as not live",
                            pair.index, committed.block
                        ));
                }
                pair.live.push((grantee, id));
            }
            "revoke" => {
                if let Some((grantee, id)) = revoked
                    && pair.may_read(&grantee).await == Some(true)
                {
                    history.violation(format!(
                            "client {}: permission {id} for {grantee}, revoked in block {}, read back as live",
                            pair.index, committed.block
                        ));
                }
            }
            _ => {}
        }
    }
}

impl History {
    /// Records a read-your-writes or file failure, in words.
    pub fn violation(&self, what: String) {
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(what);
    }
}

/// Adds `invocation` to the history.
pub fn record(history: &History, invocation: Invocation) {
    history
        .invocations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(invocation);
}

/// `s` cut to 160 characters (an error, for the history).
pub fn short(s: &str) -> String {
    s.chars().take(160).collect()
}
