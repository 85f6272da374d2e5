//! The canary scan (issue 20 item 7): after the whole scenario (`medledger demo`, whose
//! patient erases her record at the end) and a second patient's record, used and erased by
//! hand, every byte the system wrote — every peer's RocksDB (read raw, and decoded column
//! family by column family, since its tables are LZ4-compressed) and blocks, the CA's store,
//! the gateway's journal, the object store, every log — is searched for what must be nowhere:
//!
//! - a patient's enrollment name within 4 KiB of their record's pseudonym (hex or raw), in a
//!   file as written or in a stored entry (key and value together) as decoded; and of their
//!   record credential's name, anywhere but the CA's store, which alone keeps that link;
//! - a patient's UII (medical record number);
//! - the plaintext of any uploaded file;
//! - the erased record's keys: its pseudonym key K and category private keys (hex or raw).
//!
//! Zero hits, or the test names each file (and offset, or column family and key).
//!
//! Left out, as the users' own: the wallets (`wallets/`: each holds its owner's keys and
//! certificate) and the demo's work directory (the clinicians' source files and the
//! researcher's download). The erased record's *wrapped* key material must be gone from the
//! ledger's state, the gateway, the CA and the logs. Its grant envelope is private data
//! (docs/adr/0017), and so are its wrapped file keys: they were never in a block, and once
//! purged they are in no column family of any peer (a peer's raw files may hold their bytes
//! until RocksDB compacts them: counted and printed, not failed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use medledger_proto::v1;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::wallet::Wallet;
use medledger_tests::files_under;
use medledger_tests::local_network::LocalNetwork;
use memchr::memmem::Finder;

#[path = "common/access_keys.rs"]
mod access_keys;

/// How near a name and a pseudonym may not be, in a raw file.
const NEAR: usize = 4096;

/// The label of the erased record's grant envelope, private data (docs/adr/0017).
const PRIVATE_ENVELOPE: &str = "pat-c's grant envelope for dr-c (private data)";

/// Something that must not be found, and what it is.
struct Canary {
    label: String,
    finder: Finder<'static>,
}

/// Two things that must not be found near each other (a name and a pseudonym).
struct Pair {
    label: String,
    first: Finder<'static>,
    second: Vec<Finder<'static>>,
}

fn finder(bytes: &[u8]) -> Finder<'static> {
    Finder::new(bytes).into_owned()
}

/// Where something was found.
#[derive(Debug)]
struct Hit {
    label: String,
    place: String,
}

fn canary(label: impl Into<String>, bytes: impl AsRef<[u8]>) -> Canary {
    let bytes = bytes.as_ref();
    assert!(bytes.len() >= 5, "a canary too short to mean anything");
    Canary {
        label: label.into(),
        finder: finder(bytes),
    }
}

/// The hits of `canaries` and `pairs` in `bytes`, found at `place` (offsets appended).
fn search(bytes: &[u8], place: &str, canaries: &[Canary], pairs: &[Pair], hits: &mut Vec<Hit>) {
    for c in canaries {
        if let Some(at) = c.finder.find(bytes) {
            hits.push(Hit {
                label: c.label.clone(),
                place: format!("{place} at offset {at}"),
            });
        }
    }
    for p in pairs {
        for at in p.first.find_iter(bytes) {
            let from = at.saturating_sub(NEAR);
            let to = at
                .saturating_add(p.first.needle().len() + NEAR)
                .min(bytes.len());
            if p.second.iter().any(|s| s.find(&bytes[from..to]).is_some()) {
                hits.push(Hit {
                    label: p.label.clone(),
                    place: format!("{place} at offset {at}"),
                });
                break;
            }
        }
    }
}

/// Every entry of the RocksDB at `dir` (opened read-only: its process may run), column
/// family by column family, decompressed; key and value searched as one. The running peer
/// may compact a table file away while it is read (its purged values are compacted in the
/// background): the read starts again, up to five times.
fn search_rocksdb(
    dir: &Path,
    canaries: &[Canary],
    pairs: &[Pair],
    hits: &mut Vec<Hit>,
    per_family: &mut BTreeMap<String, usize>,
) {
    let mut tries = 0;
    loop {
        let mut found = Vec::new();
        let mut counted = BTreeMap::new();
        match read_rocksdb(dir, canaries, pairs, &mut found, &mut counted) {
            Ok(()) => {
                hits.append(&mut found);
                for (family, entries) in counted {
                    *per_family.entry(family).or_default() += entries;
                }
                return;
            }
            Err(e) if tries < 5 => {
                tries += 1;
                eprintln!("{}: {e}; read again", dir.display());
                std::thread::sleep(std::time::Duration::from_millis(500));
            }
            Err(e) => panic!("{}: {e}", dir.display()),
        }
    }
}

/// One read of [`search_rocksdb`].
fn read_rocksdb(
    dir: &Path,
    canaries: &[Canary],
    pairs: &[Pair],
    hits: &mut Vec<Hit>,
    per_family: &mut BTreeMap<String, usize>,
) -> Result<(), rocksdb::Error> {
    let options = rocksdb::Options::default();
    let families = rocksdb::DB::list_cf(&options, dir)?;
    let db = rocksdb::DB::open_cf_for_read_only(&options, dir, &families, false)?;
    for family in &families {
        let cf = db.cf_handle(family).expect("a family the database listed");
        let mut entries = 0;
        for entry in db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (key, value) = entry?;
            entries += 1;
            let mut both = key.to_vec();
            both.extend_from_slice(&value);
            let shown = String::from_utf8_lossy(&key[..key.len().min(80)]).into_owned();
            search(
                &both,
                &format!("{} column family {family} key {shown:?}", dir.display()),
                canaries,
                pairs,
                hits,
            );
        }
        *per_family.entry(family.clone()).or_default() += entries;
    }
    Ok(())
}

/// Everything under `root` but `skip`: each file raw, and each RocksDB decoded.
fn scan(root: &Path, skip: &[PathBuf], canaries: &[Canary], pairs: &[Pair]) -> (Vec<Hit>, usize) {
    let mut hits = Vec::new();
    let files = files_under(root, skip);
    let mut per_family = BTreeMap::new();
    for file in &files {
        let bytes = std::fs::read(file).unwrap_or_default();
        search(
            &bytes,
            &file.display().to_string(),
            canaries,
            pairs,
            &mut hits,
        );
        if file.file_name().is_some_and(|n| n == "CURRENT") {
            let dir = file.parent().unwrap();
            search_rocksdb(dir, canaries, pairs, &mut hits, &mut per_family);
        }
    }
    // The scan read the stores it should have: blocks, state and the CA's identities.
    for family in ["blocks", "state", "history", "identities"] {
        assert!(
            per_family.get(family).is_some_and(|n| *n > 0),
            "no {family} entries read: {per_family:?}"
        );
    }
    (hits, files.len())
}

/// A record's keys from its wallet's `record-keys.json`: K and every category key, as the
/// hex the file holds and as the raw bytes.
fn record_key_canaries(record_keys: &Path, whose: &str) -> Vec<Canary> {
    let text = std::fs::read_to_string(record_keys).unwrap();
    let stored: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut secrets = vec![(
        "pseudonym key K".to_string(),
        stored["patient_key"].as_str().unwrap().to_string(),
    )];
    for (category, epochs) in stored["categories"].as_object().unwrap() {
        for (epoch, key) in epochs.as_object().unwrap() {
            secrets.push((
                format!("{category} key, epoch {epoch}"),
                key.as_str().unwrap().to_string(),
            ));
        }
    }
    let mut out = Vec::new();
    for (what, hex_text) in secrets {
        out.push(canary(
            format!("{whose}'s {what} (hex)"),
            hex_text.as_bytes(),
        ));
        out.push(canary(
            format!("{whose}'s {what}"),
            hex::decode(&hex_text).unwrap(),
        ));
    }
    out
}

/// The name ↔ pseudonym pair of a patient.
fn name_near_pseudonym(name: &str, pseudonym_hex: &str) -> Pair {
    Pair {
        label: format!("{name} near their record's pseudonym"),
        first: finder(name.as_bytes()),
        second: vec![
            finder(pseudonym_hex.as_bytes()),
            finder(&hex::decode(pseudonym_hex).unwrap()),
        ],
    }
}

#[test]
fn nothing_the_system_wrote_holds_a_patients_identifiers_plaintext_or_erased_keys() {
    let net = LocalNetwork::up_with(&[]);
    let demo = net.json(None, &["demo"]);
    assert_eq!(demo["failures"], serde_json::json!([]), "{demo}");
    let run = demo["run"].as_str().unwrap().to_string();
    let jane = demo["patient"].as_str().unwrap().to_string();
    let jane_pseudonym = demo["pseudonym"].as_str().unwrap().to_string();
    let work_dir = PathBuf::from(demo["work_dir"].as_str().unwrap());

    // A second patient, by hand: a record used by a clinician, then erased.
    for (name, role) in [("pat-c", "patient"), ("dr-c", "clinician")] {
        net.enroll_member(name, role);
    }
    let uii = format!("MRN-CANARY-{run}");
    let init = net.json(Some("pat-c"), &["patient", "init", "--uii", &uii]);
    let pseudonym = init["pseudonym"].as_str().unwrap().to_string();
    net.ok(
        Some("pat-c"),
        &[
            "patient",
            "grant",
            "--to",
            "dr-c",
            "--category",
            "lab-results",
            "--rights",
            "read,write",
            "--days",
            "1",
        ],
    );
    // Client-side files live outside the network's directory, as on a clinician's machine.
    let desk = tempfile::tempdir().unwrap();
    let report = desk.path().join("report.txt");
    let plaintext = format!(
        "Canary lab report {run}: potassium 4.1 mmol/L, creatinine 88 umol/L, seen by dr-c."
    );
    std::fs::write(&report, &plaintext).unwrap();
    let upload = net.json(
        Some("dr-c"),
        &[
            "clinician",
            "upload",
            "--patient",
            &pseudonym,
            "--category",
            "lab-results",
            report.to_str().unwrap(),
        ],
    );
    let item = upload["item"].as_str().unwrap().to_string();
    let copy = desk.path().join("copy.txt");
    net.ok(
        Some("dr-c"),
        &[
            "clinician",
            "download",
            "--patient",
            &pseudonym,
            "--item",
            &item,
            "-o",
            copy.to_str().unwrap(),
        ],
    );
    assert_eq!(std::fs::read_to_string(&copy).unwrap(), plaintext);
    // A grant revoked before the erasure: its purge makes every peer flush, so the record's
    // key material is in table files, not only in memory and the write-ahead log, when the
    // erasure purges it (what the compaction after a purge must then rewrite).
    let other = net.json(
        Some("pat-c"),
        &[
            "patient",
            "grant",
            "--to",
            "dr-c",
            "--category",
            "radiation-doses",
            "--rights",
            "read",
            "--days",
            "1",
        ],
    );
    net.ok(
        Some("pat-c"),
        &[
            "patient",
            "revoke",
            "--permission",
            other["permission"].as_str().unwrap(),
        ],
    );

    // What erasing must leave nowhere: the record's keys, and its wrapped key material.
    let record_wallet = net.wallet("pat-c").join("record");
    let mut erased_keys = record_key_canaries(&record_wallet.join("record-keys.json"), "pat-c");
    let wrapped = {
        let layout = medledger_devnet::Layout::read(net.path()).unwrap();
        let wallet = Wallet::open(&record_wallet).unwrap();
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let peers = PeerSet::connect(&wallet, &layout.peers[0]).await.unwrap();
            let args = v1::PatientArgs {
                pseudonym: hex::decode(&pseudonym).unwrap(),
            };
            let (permissions, _): (v1::PermissionList, _) = peers
                .query_agreed_at("list_permissions", args.clone())
                .await
                .unwrap();
            let (items, _): (v1::ItemList, _) =
                peers.query_agreed_at("list_items", args).await.unwrap();
            let mut wrapped: Vec<Canary> = permissions
                .permissions
                .iter()
                .filter(|p| !p.key_envelope.is_empty())
                .map(|p| {
                    canary(
                        format!("pat-c's grant envelope for {}", p.grantee),
                        p.key_envelope.clone(),
                    )
                })
                .collect();
            // A ledger that keeps private data holds the envelope apart (docs/adr/0017):
            // the grantee reads it at query time.
            if peers.keeps_private_data() {
                let doctor = Wallet::open(&net.wallet("dr-c")).unwrap();
                let doctor = PeerSet::connect(&doctor, &layout.peers[0]).await.unwrap();
                let keys = access_keys::held(
                    &doctor,
                    v1::AccessKeysArgs {
                        pseudonym: hex::decode(&pseudonym).unwrap(),
                        item_id: item.clone(),
                    },
                    |k| !k.key_envelope.is_empty(),
                )
                .await;
                wrapped.push(canary(PRIVATE_ENVELOPE.to_string(), keys.key_envelope));
            }
            // The wrapped file keys: private data too, read by the owner at query time.
            let mut commitments = Vec::new();
            for item in &items.items {
                let wrapped_dek = if item.wrapped_dek_commitment.is_empty() {
                    item.wrapped_dek.clone()
                } else {
                    commitments.push(canary(
                        format!("the commitment to pat-c's file key of {}", item.id),
                        item.wrapped_dek_commitment.clone(),
                    ));
                    let keys = access_keys::held(
                        &peers,
                        v1::AccessKeysArgs {
                            pseudonym: hex::decode(&pseudonym).unwrap(),
                            item_id: item.id.clone(),
                        },
                        |k| !k.wrapped_dek.is_empty(),
                    )
                    .await;
                    keys.wrapped_dek
                };
                assert!(!wrapped_dek.is_empty(), "{}", item.id);
                wrapped.push(canary(
                    format!("pat-c's wrapped file key of {}", item.id),
                    wrapped_dek,
                ));
            }
            (wrapped, commitments)
        })
    };
    let (wrapped, commitments) = wrapped;
    assert!(!commitments.is_empty(), "file keys are private data");
    assert!(wrapped.len() >= 2, "an envelope and a wrapped file key");
    assert!(
        wrapped.iter().any(|c| c.label == PRIVATE_ENVELOPE),
        "the network keeps private data"
    );
    let credential = init["credential"].as_str().unwrap().to_string();
    net.ok(Some("pat-c"), &["patient", "erase", "--yes"]);
    assert!(!record_wallet.join("record-keys.json").exists());
    // The credential went with the record: a new record gets a new one, so nothing ties the
    // erased record's blocks to it.
    assert!(
        !record_wallet.exists(),
        "the erased record's credential kept"
    );
    let again = net.json(
        Some("pat-c"),
        &["patient", "init", "--uii", &format!("MRN-CANARY-2-{run}")],
    );
    assert_ne!(again["credential"].as_str().unwrap(), credential);
    assert_ne!(again["pseudonym"].as_str().unwrap(), pseudonym);
    // The purge is complete and the objects gone (a small record: in the erasure itself).
    let report_json = net.json(None, &["ledger", "verify"]);
    assert_eq!(report_json["ok"], true, "{report_json}");

    let mut canaries = vec![
        canary(format!("{jane}'s UII"), format!("MRN-{run}")),
        canary("pat-c's UII", uii.as_bytes()),
        canary("pat-c's uploaded file (plaintext)", plaintext.as_bytes()),
        // Free text is sealed on the clinician's machine (docs/adr/0013) and, from ledger
        // format 7, kept only as private data: its words (the demo's, cli/src/demo.rs) are
        // nowhere in clear.
        canary(
            "the demo's emergency reason (clear text)",
            "prior radiation unknown",
        ),
    ];
    for file in [
        "history-and-physical.json",
        "hemoglobin.json",
        "pathology-scan.pdf",
        "dose-plan.json",
    ] {
        let bytes = std::fs::read(work_dir.join(file)).unwrap();
        assert!(bytes.len() >= 16, "{file}");
        canaries.push(canary(format!("{file} (plaintext)"), &bytes));
        // 48 bytes of its middle: a file leaked in part is found too.
        if bytes.len() >= 96 {
            let mid = bytes.len() / 2;
            canaries.push(canary(
                format!("{file} (plaintext, part)"),
                &bytes[mid - 24..mid + 24],
            ));
        }
    }
    canaries.append(&mut erased_keys);
    let pairs = [
        name_near_pseudonym(&jane, &jane_pseudonym),
        name_near_pseudonym("pat-c", &pseudonym),
    ];
    let skip = [net.path().join("wallets"), work_dir.clone()];
    let (hits, files) = scan(net.path(), &skip, &canaries, &pairs);
    assert!(files > 20, "scanned {files} files");
    assert!(
        hits.is_empty(),
        "{} hit(s) in {files} files:\n{}",
        hits.len(),
        hits.iter()
            .map(|h| format!("  {}: {}", h.label, h.place))
            .collect::<Vec<_>>()
            .join("\n")
    );

    // The wrapped key material: gone from everything but the places that keep the
    // transactions that brought it (item 5).
    // The wrapped key material: private data from the start, never in a block; after the
    // purge in no column family, and once each peer compacted the purged values out of its
    // files (in the background, at most once a minute: after the demo's erasure, the
    // revocation above, then this erasure), in no file at all: not in a write-ahead log, not
    // in a table file awaiting compaction.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    let hits = loop {
        let (hits, _) = scan(net.path(), &skip, &wrapped, &[]);
        if hits.is_empty() || std::time::Instant::now() > deadline {
            break hits;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
    };
    assert!(
        hits.is_empty(),
        "wrapped key material of the erased record, 180 s after its purge:\n{}",
        hits.iter()
            .map(|h| format!("  {}: {}", h.label, h.place))
            .collect::<Vec<_>>()
            .join("\n")
    );
    // And the peers say so to the auditor's `ledger verify`: no purged value left in any
    // peer's files (the count drops as each compaction returns).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let verified = net.json(Some("auditor"), &["ledger", "verify", "--skip-objects"]);
        let reports = verified["peer_private"].as_array().unwrap().clone();
        assert_eq!(reports.len(), 4, "{verified}");
        let left: u64 = reports
            .iter()
            .map(|r| {
                r["purged_uncompacted"]
                    .as_u64()
                    .expect("an auditor's report")
            })
            .sum();
        if left == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "peers still report purged values in their files: {verified}"
        );
        std::thread::sleep(std::time::Duration::from_secs(2));
    }
    // The scan finds what is there: the record credential's name, in the blocks it signed
    // (decoded from the compressed tables); and below, the commitments to the wrapped key
    // material in the blocks that carried them.
    let (found, _) = scan(
        net.path(),
        &skip,
        &[canary("credential", &credential)],
        &[name_near_pseudonym(&credential, &pseudonym)],
    );
    for label in [
        "credential",
        &format!("{credential} near their record's pseudonym"),
    ] {
        assert!(
            found
                .iter()
                .any(|h| h.label == label && h.place.contains("column family blocks ")),
            "{label} not found in the blocks: {found:?}"
        );
    }
    // The enrollment name next to its credential's: in the CA's store alone (its identity
    // record of the credential), never in a log, a revocation or a peer's files.
    let linked = Pair {
        label: "pat-c near their record credential's name".into(),
        first: finder(b"pat-c"),
        second: vec![finder(credential.as_bytes())],
    };
    let ca_store = net.path().join("ca").join("db");
    let (found, _) = scan(net.path(), &skip, &[], &[linked]);
    let (in_ca, elsewhere): (Vec<&Hit>, Vec<&Hit>) = found
        .iter()
        .partition(|h| h.place.starts_with(&ca_store.display().to_string()));
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    assert!(
        !in_ca.is_empty(),
        "the CA keeps the link, and the scan finds it there"
    );
    // The blocks carry the commitments in the keys' place: the scan finds them there.
    let (found, _) = scan(net.path(), &skip, &commitments, &[]);
    for commitment in &commitments {
        assert!(
            found
                .iter()
                .any(|h| h.label == commitment.label && h.place.contains("column family blocks ")),
            "{} not found in the blocks: {found:?}",
            commitment.label
        );
    }
}
