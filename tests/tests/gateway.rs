//! Clinical files end to end: the `medledger` CLI encrypts and uploads through a real
//! `medledger-gateway` process to a local folder and to a real Garage, four real peers commit
//! the transactions, and every way of cheating is caught: tampered objects, uploads and
//! downloads without permission, and plaintext that must never leave the client.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use medledger_proto::v1;
use medledger_sdk::files::{self, Destination};
use medledger_sdk::patient::RecordKeys;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::wallet::Wallet;
use medledger_tests::{Garage, GatewayProcess, ObjectStoreArg, TestNetwork, files_under};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use prost::Message;
use rand_core::RngCore;
use serde_json::Value;

#[path = "common/access_keys.rs"]
mod access_keys;

/// The processes of one test share two cores: one test at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const LAB: &str = "lab-results";

struct Setup {
    // Dropped first: Garage stops before the network's directory (holding its data) goes.
    _garage: Option<Garage>,
    net: TestNetwork,
    gateway: GatewayProcess,
    pseudonym: String,
    store: Arc<dyn ObjectStore>,
    /// Where the store's bytes live on disk (the local folder, or Garage's data).
    store_dir: PathBuf,
}

impl Setup {
    /// A network, a gateway on `garage` (else a local folder), a registered patient who
    /// granted dr-a read and write on lab results; dr-b is enrolled with no grant.
    fn start(garage: bool) -> Setup {
        let net = TestNetwork::start(4);
        let (garage, store, store_dir, gateway) = if garage {
            let g =
                Garage::start(&net.tmp.path().join("garage")).unwrap_or_else(|e| panic!("{e:#}"));
            let gateway = GatewayProcess::start(&net, "gateway", &ObjectStoreArg::Garage(&g), &[]);
            let store = s3_store(&g);
            let dir = g.dir.join("data");
            (Some(g), store, dir, gateway)
        } else {
            let dir = net.tmp.path().join("objects");
            let gateway =
                GatewayProcess::start(&net, "gateway", &ObjectStoreArg::Local(dir.clone()), &[]);
            let store: Arc<dyn ObjectStore> =
                Arc::new(object_store::local::LocalFileSystem::new_with_prefix(&dir).unwrap());
            (None, store, dir, gateway)
        };
        for (name, role) in [
            ("pat", "patient"),
            ("dr-a", "clinician"),
            ("dr-b", "clinician"),
        ] {
            net.member(name, role);
        }
        let mut setup = Setup {
            net,
            gateway,
            pseudonym: String::new(),
            store,
            store_dir,
            _garage: garage,
        };
        let init = setup
            .cli("pat", &["patient", "init", "--uii", "MRN-0042"])
            .ok();
        setup.pseudonym = init["pseudonym"].as_str().unwrap().to_string();
        setup
            .cli(
                "pat",
                &[
                    "patient",
                    "grant",
                    "--to",
                    "dr-a",
                    "--category",
                    LAB,
                    "--rights",
                    "read,write",
                ],
            )
            .ok();
        setup
    }

    fn cli(&self, who: &str, args: &[&str]) -> medledger_tests::CliResult {
        let mut full = vec![
            "--peer",
            self.net.peers[1].address.as_str(),
            "--gateway",
            self.gateway.address.as_str(),
        ];
        full.extend_from_slice(args);
        self.net.as_(who, &full)
    }

    /// The auditor's `ledger verify` through peer 0, the store given by `store` (flags).
    fn verify(&self, store: &[&str]) -> medledger_tests::CliResult {
        let peer = self.net.address(0);
        let mut args = vec!["--peer", peer.as_str(), "ledger", "verify"];
        args.extend_from_slice(store);
        self.net.as_("auditor", &args)
    }

    fn upload(&self, who: &str, file: &Path) -> medledger_tests::CliResult {
        self.cli(
            who,
            &[
                "clinician",
                "upload",
                "--patient",
                &self.pseudonym,
                "--category",
                LAB,
                &file.display().to_string(),
            ],
        )
    }

    fn download(&self, who: &str, item: &str, out: &Path) -> medledger_tests::CliResult {
        self.cli(
            who,
            &[
                "clinician",
                "download",
                "--patient",
                &self.pseudonym,
                "--item",
                item,
                "-o",
                &out.display().to_string(),
            ],
        )
    }

    fn object_path(&self, item: &str) -> ObjectPath {
        ObjectPath::from(format!("patients/{}/{LAB}/{item}", self.pseudonym))
    }

    async fn objects(&self) -> Vec<String> {
        use futures_util::StreamExt;
        let mut names: Vec<String> = self
            .store
            .list(Some(&ObjectPath::from("patients")))
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        names.sort();
        names
    }

    async fn peers(&self, who: &str) -> PeerSet {
        let wallet = Wallet::open(&self.net.acting_wallet(who)).unwrap();
        PeerSet::connect(&wallet, &self.net.address(0))
            .await
            .unwrap()
    }

    /// The patient's audit trail, newest last.
    async fn audit(&self) -> Vec<v1::AuditEntry> {
        let peers = self.peers("pat").await;
        let answer = peers
            .query(
                "audit_trail",
                v1::AuditTrailArgs {
                    pseudonym: hex::decode(&self.pseudonym).unwrap(),
                    after_seq: 0,
                    limit: 500,
                }
                .encode_to_vec(),
            )
            .await
            .unwrap();
        v1::AuditTrail::decode(answer.result.as_slice())
            .unwrap()
            .entries
    }
}

fn s3_store(g: &Garage) -> Arc<dyn ObjectStore> {
    let creds = std::fs::read_to_string(&g.credentials_file).unwrap();
    let get = |k: &str| {
        creds
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{k} = ")))
            .unwrap()
            .to_string()
    };
    Arc::new(
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&g.endpoint)
            .with_bucket_name(&g.bucket)
            .with_region(&g.region)
            .with_access_key_id(get("access_key_id"))
            .with_secret_access_key(get("secret_access_key"))
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .build()
            .unwrap(),
    )
}

fn random_file(dir: &Path, name: &str, size: usize) -> PathBuf {
    let mut bytes = vec![0u8; size];
    rand_core::OsRng.fill_bytes(&mut bytes);
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

fn item_of(v: &Value) -> String {
    v["item"].as_str().expect("an item id").to_string()
}

/// The ciphertext bytes a download stream carries, to its end.
async fn chunk_bytes(mut stream: tonic::Streaming<v1::DownloadResponse>) -> usize {
    let mut bytes = 0;
    while let Some(part) = stream.message().await.unwrap() {
        if let Some(v1::download_response::Part::Chunk(c)) = part.part {
            bytes += c.len();
        }
    }
    bytes
}

async fn lock() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

async fn round_trips(garage: bool) {
    let s = Setup::start(garage);
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let mut items = Vec::new();
    for size in [0usize, 1, 65_535, 65_536, 65_537, 100 << 20] {
        let input = random_file(&dir, &format!("in-{size}"), size);
        let uploaded = s.upload("dr-a", &input).ok();
        let item = item_of(&uploaded);
        // The object holds ciphertext: header, plaintext and one 16-byte tag per chunk.
        let meta = s.store.head(&s.object_path(&item)).await.unwrap();
        assert_eq!(meta.size, uploaded["size"].as_u64().unwrap());
        assert!(meta.size > size as u64);
        let out = dir.join(format!("out-{size}"));
        let downloaded = s.download("dr-a", &item, &out).ok();
        assert_eq!(downloaded["size"].as_u64(), Some(size as u64));
        assert!(
            std::fs::read(&input).unwrap() == std::fs::read(&out).unwrap(),
            "{size} bytes came back different"
        );
        items.push(item);
    }
    // The patient reads with the keys in their own wallet.
    let out = dir.join("by-patient");
    s.download("pat", &items[2], &out).ok();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(dir.join("in-65535")).unwrap()
    );
    // Exactly one object per item, nothing else.
    let mut expected: Vec<String> = items.iter().map(|i| s.object_path(i).to_string()).collect();
    expected.sort();
    assert_eq!(s.objects().await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trips_on_the_local_store() {
    let _one = lock().await;
    round_trips(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn round_trips_on_garage() {
    let _one = lock().await;
    round_trips(true).await;
}

/// How many objects of erased records wait for the gateway (f+1 peers agreeing).
async fn queued(peers: &PeerSet) -> usize {
    peers
        .query_agreed_as::<v1::PendingDeletions>(
            "pending_object_deletions",
            v1::PendingDeletionsArgs::default(),
        )
        .await
        .unwrap()
        .deletions
        .len()
}

/// Issue 20 item 6, as reported: an erasure submitted to the peers directly (the SDK, not
/// the gateway) deleted no object. Now the ledger queues an erasure's objects and the
/// gateway deletes and confirms them, however the erasure came and also when it committed
/// while the gateway was down (killed, as in a crash): back, the gateway finds the queue.
#[tokio::test(flavor = "multi_thread")]
async fn an_erasure_sent_to_the_peers_while_the_gateway_is_down_deletes_its_objects() {
    let _one = lock().await;
    let mut s = Setup::start(true);
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    for n in 0..2 {
        let input = random_file(&dir, &format!("in-{n}"), 1000 + n);
        s.upload("dr-a", &input).ok();
    }
    assert_eq!(s.objects().await.len(), 2);

    s.gateway.kill();
    let peers = s.peers("pat").await;
    let erased = peers
        .submit(
            "erase_patient",
            v1::PatientArgs {
                pseudonym: hex::decode(&s.pseudonym).unwrap(),
            }
            .encode_to_vec(),
        )
        .await
        .unwrap()
        .into_valid()
        .unwrap();
    let named = v1::ErasureResult::decode(erased.result.as_slice())
        .unwrap()
        .deleted_paths;
    assert_eq!(named.len(), 2);
    // Nobody deleted them yet: they wait on the ledger, which the gateway reads.
    assert_eq!(s.objects().await.len(), 2);
    let gateway_wallet = Wallet::open(&s.net.acting_wallet("gateway")).unwrap();
    let as_gateway = PeerSet::connect(&gateway_wallet, &s.net.address(0))
        .await
        .unwrap();
    assert_eq!(queued(&as_gateway).await, 2);
    // The auditor's verify names both objects as still owed by the gateway.
    let garage = s._garage.as_ref().unwrap();
    let credentials = garage.credentials_file.display().to_string();
    let verify = |s: &Setup| {
        s.verify(&[
            "--s3-endpoint",
            &garage.endpoint,
            "--s3-bucket",
            &garage.bucket,
            "--s3-region",
            &garage.region,
            "--s3-credentials-file",
            &credentials,
        ])
    };
    let report = verify(&s);
    assert!(!report.success, "{}", report.json);
    let owed = report
        .json
        .to_string()
        .matches("queued, the gateway has not deleted it yet")
        .count();
    assert_eq!(owed, 2, "{}", report.json);

    s.gateway = GatewayProcess::serve(
        &s.net,
        "gateway",
        &ObjectStoreArg::Garage(s._garage.as_ref().unwrap()),
        &[],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !s.objects().await.is_empty() || queued(&as_gateway).await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "objects left: {:?}\n{}",
            s.objects().await,
            std::fs::read_to_string(&s.gateway.log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let log = std::fs::read_to_string(&s.gateway.log).unwrap();
    assert!(
        log.contains("erased records' objects deleted from the store"),
        "{log}"
    );
    let report = verify(&s).ok();
    assert_eq!(report["ok"], true, "{report}");
}

/// Issue 20 item 6: a record too large for one purge step (more items than a step takes)
/// is closed by its erasure at once; while the gateway is down (killed) the auditor's verify
/// reports the purge under way; back, the gateway steps the rest of the purge and deletes
/// every object, with no one else doing anything, and verify passes with the purge's time.
#[tokio::test(flavor = "multi_thread")]
async fn the_gateway_finishes_the_purge_of_an_erasure_too_large_for_one_step() {
    let _one = lock().await;
    let mut s = Setup::start(false);
    let peers = s.peers("pat").await;
    let pseudonym = hex::decode(&s.pseudonym).unwrap();
    // More items than one purge step takes (`medledger_chaincode::erasure::
    // PURGE_STEP_ENTRIES`, 1,000), straight on the ledger (their objects never uploaded: a
    // deletion finds them gone, which counts as deleted), a few in flight at a time (the
    // peers admit at most 200 requests a second from one identity).
    let items = 1_050;
    let key_epoch = 1;
    for chunk in (0..items).collect::<Vec<_>>().chunks(8) {
        let adds = chunk.iter().map(|i| {
            let item_id = format!("bulk-{i:05}");
            let mut args = v1::AddItemArgs {
                pseudonym: pseudonym.clone(),
                path: format!("patients/{}/{LAB}/{item_id}", s.pseudonym),
                item_id,
                category: LAB.into(),
                sha256: vec![7; 32],
                size: 1,
                wrapped_dek: vec![9; 80],
                key_epoch,
                ..Default::default()
            };
            // The wrapped file key as private data (docs/adr/0017).
            let private = peers.item_key_private(&mut args);
            let peers = &peers;
            async move {
                peers
                    .submit_maybe_private("add_item", args.encode_to_vec(), &private)
                    .await
                    .and_then(|c| c.into_valid())
            }
        });
        futures_util::future::try_join_all(adds).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The gateway is down when the erasure commits (a crash): the purge waits for it.
    s.gateway.kill();
    let erased = peers
        .submit(
            "erase_patient",
            v1::PatientArgs {
                pseudonym: pseudonym.clone(),
            }
            .encode_to_vec(),
        )
        .await
        .unwrap()
        .into_valid()
        .unwrap();
    let first = v1::ErasureResult::decode(erased.result.as_slice()).unwrap();
    assert!(!first.purge_complete);
    let objects_dir = s.store_dir.display().to_string();
    let verify = |s: &Setup| s.verify(&["--objects-dir", &objects_dir]);
    // The auditor sees the purge under way (key material still in the state).
    let report = verify(&s);
    assert!(!report.success, "{}", report.json);
    assert_eq!(
        report.json["erasures"][0]["pseudonym"],
        s.pseudonym.as_str()
    );
    assert!(
        report.json["erasures"][0]["purged_at"].is_null(),
        "{}",
        report.json
    );
    s.gateway = GatewayProcess::serve(
        &s.net,
        "gateway",
        &ObjectStoreArg::Local(s.store_dir.clone()),
        &[],
    );

    let gateway_wallet = Wallet::open(&s.net.acting_wallet("gateway")).unwrap();
    let as_gateway = PeerSet::connect(&gateway_wallet, &s.net.address(0))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let purges: v1::PatientList = as_gateway
            .query_agreed_as("pending_purges", v1::PendingDeletionsArgs::default())
            .await
            .unwrap();
        if purges.pseudonyms.is_empty() && queued(&as_gateway).await == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the purge did not finish: {}",
            std::fs::read_to_string(&s.gateway.log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    let log = std::fs::read_to_string(&s.gateway.log).unwrap();
    assert!(log.contains("purge_steps"), "{log}");
    let report = verify(&s).ok();
    assert_eq!(report["ok"], true, "{report}");
    assert!(
        report["erasures"][0]["purged_at"].as_i64().unwrap() > 0,
        "{report}"
    );
    // Checked entry by entry, not from the purge's cursor alone: nothing holds a key.
    assert_eq!(report["erasures"][0]["key_material_left"], 0, "{report}");
}

/// Issue 19 item 2, as reported: `medledger reenroll` replaced the wallet's encryption key,
/// so every read grant the clinician held stopped decrypting, and the old wallet, not
/// revoked, kept working. A renewal now keeps the old encryption key in the wallet's key
/// ring; one with a new signing key revokes the superseded certificate, which the peers put
/// on the ledger by themselves; one for key compromise empties the ring.
#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_clinician_keeps_what_was_shared_with_them() {
    let _one = lock().await;
    let s = Setup::start(false);
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let input = random_file(&dir, "in", 70_000);
    let item = item_of(&s.upload("dr-a", &input).ok());
    let read_back = |n: &str| {
        let out = dir.join(format!("out-{n}"));
        let result = s.download("dr-a", &item, &out);
        (result, out)
    };
    // Renewed, same signing key: the envelope wrapped to the old key still opens.
    let renewed = s.cli("dr-a", &["reenroll"]).ok();
    assert_eq!(renewed["superseded"].as_array().unwrap().len(), 0);
    assert_eq!(renewed["key_ring"], 1);
    let (result, out) = read_back("after-renewal");
    result.ok();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());

    // Renewed with a new signing key: the old certificate is revoked (superseded) and a
    // copy of the old wallet stops working, with no operator step.
    let old_wallet = s.net.tmp.path().join("dr-a-old-wallet");
    let copied = std::process::Command::new("cp")
        .args(["-a"])
        .arg(s.net.wallet("dr-a"))
        .arg(&old_wallet)
        .status()
        .unwrap();
    assert!(copied.success());
    let renewed = s.cli("dr-a", &["reenroll", "--new-signing-key"]).ok();
    // Both earlier certificates (the first and the one renewed above).
    assert_eq!(
        renewed["superseded"].as_array().unwrap().len(),
        2,
        "{renewed}"
    );
    assert_eq!(renewed["key_ring"], 2);
    let (result, out) = read_back("after-new-key");
    result.ok();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&input).unwrap());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let wallet = Wallet::open(&old_wallet).unwrap();
        let refused = match PeerSet::connect(&wallet, &s.net.address(0)).await {
            Err(_) => true,
            Ok(peers) => peers
                .query("list_categories", v1::Empty {}.encode_to_vec())
                .await
                .is_err(),
        };
        if refused {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the superseded certificate still works 30 s after the renewal"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }

    // Renewed for key compromise: new keys, the ring emptied, so the envelope wrapped to a
    // compromised key no longer opens here (the patient re-wraps to the new key).
    let renewed = s.cli("dr-a", &["reenroll", "--key-compromise"]).ok();
    assert_eq!(renewed["key_ring"], 0);
    let (result, _) = read_back("after-compromise");
    assert!(!result.success);
    assert!(
        result
            .error_message()
            .contains("no key of this wallet opens"),
        "{}",
        result.error_message()
    );
}

/// Issue 19 item 3: keys follow consent. A clinician whose read grant is revoked kept the
/// category key they unwrapped and can fetch any ciphertext (the object store is not
/// trusted for confidentiality): after the revocation the patient's client rotates the key,
/// so an item added afterwards is wrapped to a key that clinician never had. A reader who
/// keeps access opens the earlier items (down the key chain) and the new one.
#[tokio::test(flavor = "multi_thread")]
async fn a_revoked_reader_with_every_key_and_byte_cannot_open_what_comes_after() {
    use medledger_crypto::{EncryptionKey, WrapContext, unwrap_key};
    let _one = lock().await;
    let s = Setup::start(false);
    s.net.member("dr-c", "clinician");
    for (name, rights) in [("dr-b", "write"), ("dr-c", "read")] {
        s.cli(
            "pat",
            &[
                "patient",
                "grant",
                "--to",
                name,
                "--category",
                LAB,
                "--rights",
                rights,
            ],
        )
        .ok();
    }
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let before = random_file(&dir, "before", 5_000);
    let old_item = item_of(&s.upload("dr-a", &before).ok());
    let pseudonym = hex::decode(&s.pseudonym).unwrap();

    // What dr-a keeps: the epoch-1 category key, unwrapped from their envelope with their
    // wallet's key.
    let patient = s.peers("pat").await;
    let permissions = |list: &v1::PermissionList| list.permissions.clone();
    let list: v1::PermissionList = patient
        .query_agreed_at(
            "list_permissions",
            v1::PatientArgs {
                pseudonym: pseudonym.clone(),
            },
        )
        .await
        .unwrap()
        .0;
    let dr_a = permissions(&list)
        .into_iter()
        .find(|p| p.grantee == "dr-a")
        .unwrap();
    // The envelope is private data (docs/adr/0017): dr-a reads it while the grant stands.
    let keys = access_keys::held(
        &s.peers("dr-a").await,
        v1::AccessKeysArgs {
            pseudonym: pseudonym.clone(),
            item_id: old_item.clone(),
        },
        |k| !k.key_envelope.is_empty(),
    )
    .await;
    assert!(
        dr_a.key_envelope.is_empty(),
        "no envelope in the ledger's state"
    );
    assert_eq!(keys.permission_id, dr_a.id);
    let wallet = Wallet::open(&s.net.acting_wallet("dr-a")).unwrap();
    let kept_key = EncryptionKey::from_bytes(
        *unwrap_key(
            &wallet.encryption,
            &keys.key_envelope,
            WrapContext::CategoryKey {
                pseudonym: &pseudonym,
                category: LAB,
                epoch: 1,
            },
        )
        .unwrap(),
    );

    // The patient revokes dr-a; the key rotates by itself; dr-c keeps access.
    let revoked = s
        .cli("pat", &["patient", "revoke", "--permission", &dr_a.id])
        .ok();
    assert_eq!(revoked["rotated"]["epoch"], 2, "{revoked}");
    assert_eq!(revoked["rotated"]["kept"], serde_json::json!(["dr-c"]));

    let after = random_file(&dir, "after", 5_000);
    let new_item = item_of(&s.upload("dr-b", &after).ok());
    let items: v1::ItemList = patient
        .query_agreed_at(
            "list_items",
            v1::PatientArgs {
                pseudonym: pseudonym.clone(),
            },
        )
        .await
        .unwrap()
        .0;
    // The wrapped file keys, private data: the owner reads them (docs/adr/0017).
    let mut wrapped = std::collections::BTreeMap::new();
    for id in [&old_item, &new_item] {
        let item = items.items.iter().find(|i| &i.id == id).unwrap().clone();
        assert!(
            item.wrapped_dek.is_empty(),
            "no file key in the ledger's state"
        );
        let keys = access_keys::held(
            &patient,
            v1::AccessKeysArgs {
                pseudonym: pseudonym.clone(),
                item_id: id.clone(),
            },
            |k| !k.wrapped_dek.is_empty(),
        )
        .await;
        wrapped.insert(id.clone(), (item.key_epoch, keys.wrapped_dek));
    }
    let wrapped = |id: &str| wrapped[id].clone();
    // dr-a's kept key opens the file key of the item from before...
    let (epoch, dek) = wrapped(&old_item);
    assert_eq!(epoch, 1);
    unwrap_key(&kept_key, &dek, WrapContext::FileKey { item_id: &old_item }).unwrap();
    // ...and not the one added after the revocation, whose object dr-a could still fetch.
    let (epoch, dek) = wrapped(&new_item);
    assert_eq!(epoch, 2);
    assert!(unwrap_key(&kept_key, &dek, WrapContext::FileKey { item_id: &new_item }).is_err());
    // dr-a is refused by the gateway anyway.
    assert!(!s.download("dr-a", &new_item, &dir.join("by-dr-a")).success);
    // dr-c reads both: the new item with the epoch-2 key, the old one down the key chain.
    for (item, input) in [(&old_item, &before), (&new_item, &after)] {
        let out = dir.join(format!("by-dr-c-{item}"));
        s.download("dr-c", item, &out).ok();
        assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(input).unwrap());
    }
    // `patient rotate` does it on demand: dr-c still reads the first item, two epochs back.
    let rotated = s.cli("pat", &["patient", "rotate", "--category", LAB]).ok();
    assert_eq!(rotated["epoch"], 3);
    let out = dir.join("by-dr-c-again");
    s.download("dr-c", &old_item, &out).ok();
    assert_eq!(
        std::fs::read(&out).unwrap(),
        std::fs::read(&before).unwrap()
    );
}

/// Flipped byte, truncation, another item's object in its place, deletion: each is reported
/// as tampered (or missing), nothing is decrypted, and the restored object reads again.
async fn tampering(garage: bool) {
    let s = Setup::start(garage);
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let a = item_of(&s.upload("dr-a", &random_file(&dir, "a", 300_000)).ok());
    let b = item_of(&s.upload("dr-a", &random_file(&dir, "b", 300_000)).ok());
    let path = s.object_path(&a);
    let original = s.store.get(&path).await.unwrap().bytes().await.unwrap();
    let other = s
        .store
        .get(&s.object_path(&b))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();

    let mut flipped = original.to_vec();
    flipped[150_000] ^= 0x01;
    let mut header_flipped = original.to_vec();
    header_flipped[10] ^= 0x80;
    let truncated = original[..original.len() - 1000].to_vec();
    let mut extended = original.to_vec();
    extended.extend_from_slice(&[0u8; 64]);
    for (what, bytes) in [
        ("one flipped byte", flipped),
        ("a flipped header byte", header_flipped),
        ("truncation", truncated),
        ("extension", extended),
        ("another item's object", other.to_vec()),
    ] {
        s.store.put(&path, PutPayload::from(bytes)).await.unwrap();
        let out = dir.join("tampered-out");
        let result = s.download("dr-a", &a, &out);
        assert_eq!(result.error_kind(), "tampered", "{what}: {:?}", result.json);
        assert!(result.error_message().contains("TAMPERED"), "{what}");
        assert!(!out.exists(), "{what}: nothing may be written");
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".medledger-download")
            })
            .collect();
        assert!(
            leftovers.is_empty(),
            "{what}: the spooled ciphertext is removed"
        );
    }
    s.store.delete(&path).await.unwrap();
    let missing = s.download("dr-a", &a, &dir.join("missing-out"));
    assert_eq!(missing.error_kind(), "tampered", "{:?}", missing.json);

    s.store
        .put(&path, PutPayload::from(original))
        .await
        .unwrap();
    s.download("dr-a", &a, &dir.join("restored")).ok();
    assert_eq!(
        std::fs::read(dir.join("restored")).unwrap(),
        std::fs::read(dir.join("a")).unwrap()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_on_the_local_store_is_detected() {
    let _one = lock().await;
    tampering(false).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn tampering_on_garage_is_detected() {
    let _one = lock().await;
    tampering(true).await;
}

/// dr-b has no grant. Through the CLI the upload is refused before anything is sent; through
/// the SDK straight to the gateway (a client skipping that check) the object is written, the
/// ledger refuses the transaction, and the gateway deletes the object. Either way no object
/// remains and the patient's trail shows the denied attempt. A download by dr-b streams
/// nothing and is audited as denied.
#[tokio::test(flavor = "multi_thread")]
async fn without_permission_nothing_is_stored_or_served() {
    let _one = lock().await;
    let s = Setup::start(true);
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let input = random_file(&dir, "x", 200_000);
    let item = item_of(&s.upload("dr-a", &input).ok());
    let before = s.objects().await;
    assert_eq!(before.len(), 1);

    let refused = s.upload("dr-b", &input);
    assert_eq!(
        refused.error_kind(),
        "permission_denied",
        "{:?}",
        refused.json
    );

    // A client that skips the check: the category key is public, on the ledger.
    let keys = RecordKeys::open(&Wallet::open(&s.net.acting_wallet("pat")).unwrap()).unwrap();
    let destination = Destination::for_owner(&keys, LAB).unwrap();
    let dr_b = Wallet::open(&s.net.acting_wallet("dr-b")).unwrap();
    let peers = s.peers("dr-b").await;
    let mut gateway = files::connect_gateway(&dr_b, &s.gateway.address, peers.revocations())
        .await
        .unwrap();
    let trail_before = s.audit().await.len();
    let err = files::upload(&peers, &mut gateway, &destination, &input, |_, _| {})
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "permission_denied", "{err}");
    assert_eq!(
        s.objects().await,
        before,
        "the refused upload's object is deleted"
    );
    let trail = s.audit().await;
    assert_eq!(trail.len(), trail_before + 1);
    let denied = trail.last().unwrap();
    assert_eq!(denied.actor, "dr-b");
    assert_eq!(denied.action, v1::AuditAction::AddItem as i32);
    assert_ne!(denied.outcome, v1::Outcome::Allowed as i32);

    let out = dir.join("stolen");
    let result = s.download("dr-b", &item, &out);
    assert_eq!(
        result.error_kind(),
        "permission_denied",
        "{:?}",
        result.json
    );
    assert!(!out.exists());
    let trail = s.audit().await;
    let denied = trail.last().unwrap();
    assert_eq!(denied.actor, "dr-b");
    assert_eq!(denied.action, v1::AuditAction::Access as i32);
    assert_eq!(denied.item, item);
    assert_ne!(denied.outcome, v1::Outcome::Allowed as i32);
    // dr-a's read is on the trail as allowed.
    s.download("dr-a", &item, &dir.join("ok")).ok();
    let trail = s.audit().await;
    let allowed = trail.last().unwrap();
    assert_eq!(
        (allowed.actor.as_str(), allowed.outcome),
        ("dr-a", v1::Outcome::Allowed as i32)
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A canary string in a plaintext appears nowhere but on the clients: not in Garage's
/// bytes, not in the gateway's or the peers' logs, not in the ledger's files.
#[tokio::test(flavor = "multi_thread")]
async fn plaintext_never_leaves_the_client() {
    let _one = lock().await;
    let s = Setup::start(true);
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let mut tag = [0u8; 12];
    rand_core::OsRng.fill_bytes(&mut tag);
    let canary = format!("CANARY-{}", hex::encode(tag));
    let mut text = String::from("{\"resourceType\":\"Observation\",\"note\":\"");
    for _ in 0..2000 {
        text.push_str(&canary);
        text.push(' ');
    }
    text.push_str("\"}");
    let input = dir.join("note.json");
    std::fs::write(&input, &text).unwrap();
    let item = item_of(&s.upload("dr-a", &input).ok());
    s.download("dr-a", &item, &dir.join("back.json")).ok();
    assert_eq!(
        std::fs::read_to_string(dir.join("back.json")).unwrap(),
        text
    );

    // What the store serves, and what it keeps on disk.
    let stored = s
        .store
        .get(&s.object_path(&item))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(!contains(&stored, canary.as_bytes()));
    let mut scanned = 0;
    let mut places: Vec<PathBuf> = files_under(&s.store_dir, &[]);
    places.push(s.gateway.log.clone());
    for (i, peer) in s.net.peers.iter().enumerate() {
        places.extend(files_under(&peer.data_dir, &[]));
        places.push(s.net.tmp.path().join(format!("peer{i}.log")));
    }
    places.extend(files_under(&s.net.tmp.path().join("gateway-state"), &[]));
    for path in places {
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        scanned += bytes.len();
        assert!(
            !contains(&bytes, canary.as_bytes()),
            "the canary leaked into {}",
            path.display()
        );
    }
    assert!(
        scanned > 100_000,
        "the scan saw the stores ({scanned} bytes)"
    );
    // And the blocks as the peers serve them (to their readers: the auditor the genesis
    // names).
    let blocks = s
        .cli("auditor", &["ledger", "blocks", "--limit", "100"])
        .ok();
    assert!(!blocks.to_string().contains(&canary));
}

/// Streams the gateway must refuse before anything is stored: a file over the size limit,
/// bytes that do not match the declared hash or size, a transaction signed by someone other
/// than the caller, a stream that does not begin with the transaction.
#[tokio::test(flavor = "multi_thread")]
async fn malformed_uploads_leave_nothing_behind() {
    let _one = lock().await;
    let net = TestNetwork::start(4);
    let objects = net.tmp.path().join("objects");
    let gateway = GatewayProcess::start(
        &net,
        "gateway",
        &ObjectStoreArg::Local(objects.clone()),
        &["--max-file-mib", "1", "--transfer-idle-s", "2"],
    );
    for (name, role) in [
        ("pat", "patient"),
        ("dr-a", "clinician"),
        ("dr-b", "clinician"),
    ] {
        net.member(name, role);
    }
    let as_ = |who: &str, args: &[&str]| {
        let mut full = vec!["--peer", net.peers[0].address.as_str()];
        full.extend_from_slice(args);
        net.as_(who, &full)
    };
    as_("pat", &["patient", "init", "--uii", "MRN-7"]).ok();
    as_(
        "pat",
        &[
            "patient",
            "grant",
            "--to",
            "dr-a",
            "--category",
            LAB,
            "--rights",
            "write",
        ],
    )
    .ok();
    let keys = RecordKeys::open(&Wallet::open(&net.acting_wallet("pat")).unwrap()).unwrap();
    let destination = Destination::for_owner(&keys, LAB).unwrap();
    let dr_a = Wallet::open(&net.acting_wallet("dr-a")).unwrap();
    let peers = PeerSet::connect(&dr_a, &net.address(0)).await.unwrap();
    let mut client = files::connect_gateway(&dr_a, &gateway.address, peers.revocations())
        .await
        .unwrap();

    // gRPC health, on the same mutual-TLS port.
    let tls = medledger_sdk::peer::client_tls_for(
        medledger_crypto::Role::Gateway,
        &dr_a,
        None,
        &Default::default(),
    )
    .unwrap();
    let channel = medledger_tls::connect(&gateway.address, tls, Default::default())
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest {
            service: "medledger.v1.Gateway".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    // A client that takes a peer for the gateway is refused at the handshake: the server
    // certificate must be of role gateway.
    assert!(
        files::connect_gateway(&dr_a, &net.address(0), peers.revocations())
            .await
            .is_err()
    );

    // Over the limit: refused from the declaration, before any byte is stored.
    let big = random_file(net.tmp.path(), "big", 2 << 20);
    let err = files::upload(&peers, &mut client, &destination, &big, |_, _| {})
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            medledger_sdk::error::ClientError::Rejected {
                code: tonic::Code::OutOfRange,
                ..
            }
        ),
        "{err:?}"
    );

    // Hand-made streams.
    let item = "0123456789abcdef0123456789abcdef";
    let add_item = |sha256: [u8; 32], size: u64| {
        peers
            .transaction(
                "add_item",
                v1::AddItemArgs {
                    pseudonym: keys.pseudonym.to_vec(),
                    item_id: item.into(),
                    category: LAB.into(),
                    path: format!("patients/{}/{LAB}/{item}", hex::encode(keys.pseudonym)),
                    sha256: sha256.to_vec(),
                    size,
                    // In clear: the gateway refuses each of these streams for its bytes
                    // before any transaction reaches a peer.
                    wrapped_dek: vec![1; 80],
                    key_epoch: 1,
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .1
    };
    let envelope = |e: v1::Envelope| v1::UploadRequest {
        part: Some(v1::upload_request::Part::Envelope(e)),
    };
    let chunk = |b: &[u8]| v1::UploadRequest {
        part: Some(v1::upload_request::Part::Chunk(b.to_vec())),
    };
    let data = vec![7u8; 100_000];
    let digest: [u8; 32] = {
        use sha2::Digest;
        sha2::Sha256::digest(&data).into()
    };
    // The same transaction, with another expiry, signed again by dr-a.
    let expiring = |expires_at_ms: i64| {
        let mut tx = match add_item(digest, 100_000).kind {
            Some(v1::envelope::Kind::Transaction(signed)) => {
                v1::Transaction::decode(signed.transaction.as_slice()).unwrap()
            }
            _ => unreachable!(),
        };
        tx.expires_at_ms = expires_at_ms;
        let bytes = tx.encode_to_vec();
        let signature = dr_a
            .signing
            .sign(medledger_crypto::SignatureDomain::Transaction, &bytes);
        v1::Envelope {
            kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
                transaction: bytes,
                signature: signature.to_bytes().to_vec(),
                private_data_acks: Vec::new(),
                acks_signature: Vec::new(),
            })),
        }
    };
    let now_ms = medledger_tls::now_unix() * 1000;
    let cases: Vec<(&str, Vec<v1::UploadRequest>, tonic::Code)> = vec![
        (
            "a transaction already expired",
            vec![envelope(expiring(now_ms - 1)), chunk(&data)],
            tonic::Code::InvalidArgument,
        ),
        (
            "a transaction expiring later than any peer accepts",
            vec![envelope(expiring(now_ms + 3_600_000)), chunk(&data)],
            tonic::Code::InvalidArgument,
        ),
        (
            "bytes that do not match the declared hash",
            vec![envelope(add_item([9; 32], 100_000)), chunk(&data)],
            tonic::Code::InvalidArgument,
        ),
        (
            "fewer bytes than declared",
            vec![envelope(add_item(digest, 100_001)), chunk(&data)],
            tonic::Code::InvalidArgument,
        ),
        (
            "more bytes than declared",
            vec![
                envelope(add_item(digest, 100_000)),
                chunk(&data),
                chunk(b"x"),
            ],
            tonic::Code::InvalidArgument,
        ),
        (
            "no transaction first",
            vec![chunk(&data)],
            tonic::Code::InvalidArgument,
        ),
        ("an empty stream", vec![], tonic::Code::InvalidArgument),
    ];
    for (what, messages, code) in cases {
        let status = client
            .upload(tokio_stream::iter(messages))
            .await
            .unwrap_err();
        assert_eq!(status.code(), code, "{what}: {status:?}");
    }
    // A client that goes silent mid-upload (the stream stays open): abandoned after the
    // idle limit (2 s here), its parts aborted, nothing stored.
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    sender
        .send(envelope(add_item(digest, 100_000)))
        .await
        .unwrap();
    sender.send(chunk(&data[..50_000])).await.unwrap();
    let status = client
        .upload(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("abandoned"), "{status:?}");
    drop(sender);
    // dr-a's signed transaction, sent over dr-b's connection.
    let dr_b = Wallet::open(&net.acting_wallet("dr-b")).unwrap();
    let mut as_b = files::connect_gateway(&dr_b, &gateway.address, &Default::default())
        .await
        .unwrap();
    let status = as_b
        .upload(tokio_stream::iter(vec![
            envelope(add_item(digest, 100_000)),
            chunk(&data),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    assert!(
        files_under(&objects, &[]).is_empty(),
        "nothing stored: {:?}",
        files_under(&objects, &[])
    );
    // The same stream, correct, from its signer, the wrapped file key beside it as private
    // data: stored (the hand-made key is never opened by the ledger).
    let mut correct = v1::AddItemArgs {
        pseudonym: keys.pseudonym.to_vec(),
        item_id: item.into(),
        category: LAB.into(),
        path: format!("patients/{}/{LAB}/{item}", hex::encode(keys.pseudonym)),
        sha256: digest.to_vec(),
        size: 100_000,
        wrapped_dek: vec![1; 80],
        key_epoch: 1,
        ..Default::default()
    };
    let private = peers.item_key_private(&mut correct);
    let (_, signed) = peers
        .signed_private("add_item", correct.encode_to_vec(), &private)
        .await
        .unwrap();
    let ok = client
        .upload(tokio_stream::iter(vec![envelope(signed), chunk(&data)]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.size, 100_000);
    assert_eq!(files_under(&objects, &[]).len(), 1);
    // The same path again: refused before a byte is written, the stored object untouched.
    let status = client
        .upload(tokio_stream::iter(vec![
            envelope(add_item(digest, 100_000)),
            chunk(&[0; 100_000]),
        ]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::AlreadyExists, "{status:?}");
    let stored = std::fs::read(&files_under(&objects, &[])[0]).unwrap();
    assert_eq!(stored, data);

    // Each read is a fresh committed access: the patient's signed record_access serves one
    // download; sent again, it is refused (a clinician keeping an old access must not read
    // after a revocation).
    let pat = Wallet::open(&net.acting_wallet("pat")).unwrap();
    let pat_peers = PeerSet::connect(&pat, &net.address(1)).await.unwrap();
    let mut as_pat = files::connect_gateway(&pat, &gateway.address, pat_peers.revocations())
        .await
        .unwrap();
    // An access committed in the gateway's first moments is refused with a time to ask
    // again (it cannot know what it served before it started): asked again, as the SDK does.
    let mut attempts = 0;
    let (access, first) = loop {
        let (_, access) = pat_peers.transaction(
            "record_access",
            v1::RecordAccessArgs {
                pseudonym: keys.pseudonym.to_vec(),
                item_id: item.into(),
            }
            .encode_to_vec(),
        );
        match as_pat
            .download(v1::DownloadRequest {
                envelope: Some(access.clone()),
            })
            .await
        {
            Ok(stream) => break (access, stream.into_inner()),
            Err(status) if attempts < 3 => {
                let wait: u64 = status
                    .metadata()
                    .get("medledger-retry-after-ms")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or_else(|| panic!("refused for good: {status:?}"));
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
            }
            Err(status) => panic!("{status:?}"),
        }
    };
    let request = || v1::DownloadRequest {
        envelope: Some(access.clone()),
    };
    assert_eq!(
        chunk_bytes(first).await,
        data.len(),
        "the first download serves the object"
    );
    let replay = as_pat.download(request()).await;
    let status = match replay {
        Err(status) => status,
        Ok(stream) => stream
            .into_inner()
            .message()
            .await
            .expect_err("a replayed access serves nothing"),
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("already served"), "{status:?}");

    // A gateway process that started after the access was recorded — this one restarted, or
    // a second one in front of the same store — cannot know whether it served: it serves
    // nothing for that access.
    let restarted = GatewayProcess::start(
        &net,
        "gateway-restarted",
        &ObjectStoreArg::Local(objects.clone()),
        &[],
    );
    let mut as_pat = files::connect_gateway(&pat, &restarted.address, pat_peers.revocations())
        .await
        .unwrap();
    let status = match as_pat.download(request()).await {
        Err(status) => status,
        Ok(stream) => stream
            .into_inner()
            .message()
            .await
            .expect_err("an access from before the gateway started serves nothing"),
    };
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("(re)started"), "{status:?}");
    // A newly signed access, recorded once the clock skew the gateway allows has passed
    // since it started, is served.
    tokio::time::sleep(std::time::Duration::from_millis(3_500)).await;
    let (_, access) = pat_peers.transaction(
        "record_access",
        v1::RecordAccessArgs {
            pseudonym: keys.pseudonym.to_vec(),
            item_id: item.into(),
        }
        .encode_to_vec(),
    );
    let fresh = as_pat
        .download(v1::DownloadRequest {
            envelope: Some(access),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        chunk_bytes(fresh).await,
        data.len(),
        "a new access serves the object"
    );
}

/// Issue 15, item 3: a sharing client that records a copy as de-identified but uploads it
/// as it is (here the SDK used directly, as a modified client would) is caught by the
/// researcher's client: nothing of it reaches the researcher's disk, the incident is on the
/// patient's trail, and an honest de-identified copy in the same study is fetched.
#[tokio::test(flavor = "multi_thread")]
async fn a_copy_that_is_not_deidentified_is_refused_by_the_researcher_and_recorded() {
    let _one = lock().await;
    let s = Setup::start(false);
    s.net.member("res", "researcher");
    s.cli(
        "res",
        &[
            "researcher",
            "study",
            "create",
            "--id",
            "onco-1",
            "--title",
            "Outcomes",
        ],
    )
    .ok();
    s.cli(
        "pat",
        &[
            "patient",
            "grant",
            "--to",
            "dr-a",
            "--category",
            LAB,
            "--rights",
            "share",
            "--study",
            "onco-1",
            "--anonymize",
        ],
    )
    .ok();
    let dir = s.net.tmp.path().join("files");
    std::fs::create_dir_all(&dir).unwrap();
    let lab = dir.join("lab.json");
    std::fs::write(
        &lab,
        r#"{"resourceType":"Observation","status":"final",
            "subject":{"display":"Hester Quayle"},
            "code":{"coding":[{"system":"http://loinc.org","code":"718-7"}]},
            "valueQuantity":{"value":11.4,"unit":"g/dL","system":"http://unitsofmeasure.org","code":"g/dL"}}"#,
    )
    .unwrap();
    let item = item_of(&s.upload("dr-a", &lab).ok());
    // An honest share, de-identified by the CLI.
    s.cli(
        "dr-a",
        &[
            "clinician",
            "share",
            "--patient",
            &s.pseudonym,
            "--study",
            "onco-1",
            "--item",
            &item,
        ],
    )
    .ok();
    // A dishonest one: recorded as de-identified, uploaded as it is.
    let wallet = Wallet::open(&s.net.acting_wallet("dr-a")).unwrap();
    let peers = s.peers("dr-a").await;
    let pseudonym: [u8; 32] = hex::decode(&s.pseudonym).unwrap().try_into().unwrap();
    let grant: v1::CheckAccessResult = peers
        .query_as(
            "check_access",
            v1::CheckAccessArgs {
                pseudonym: pseudonym.to_vec(),
                grantee: "dr-a".into(),
                category: LAB.into(),
                right: v1::Right::Share as i32,
                study_id: "onco-1".into(),
            },
        )
        .await
        .unwrap();
    assert!(grant.allowed, "{}", grant.reason);
    let copy = files::StudyCopy {
        pseudonym,
        source_item_id: item.clone(),
        study_id: "onco-1".into(),
        study_pseudonym: grant.study_pseudonym.clone(),
        study_key: medledger_crypto::EncryptionPublicKey::from_slice(&grant.study_key).unwrap(),
        deidentified_as_of: Some(time::OffsetDateTime::now_utc().year()),
    };
    let mut gateway = files::connect_gateway(&wallet, &s.gateway.address, &Default::default())
        .await
        .unwrap();
    let dishonest = files::upload_to(
        &peers,
        &mut gateway,
        files::Target::StudyCopy(&copy),
        &lab,
        |_, _| {},
    )
    .await
    .unwrap();
    // Another: text hidden in a duplicate key, which parses to a clean copy. The re-check
    // passes, and what the researcher's client writes is the canonical copy, not these bytes.
    let hidden = dir.join("hidden.json");
    std::fs::write(
        &hidden,
        r#"{"resourceType":"Patient","gender":"Hester Quayle 123-45-6789","gender":"female"}"#,
    )
    .unwrap();
    files::upload_to(
        &peers,
        &mut gateway,
        files::Target::StudyCopy(&copy),
        &hidden,
        |_, _| {},
    )
    .await
    .unwrap();

    let out = dir.join("study");
    let fetched = s
        .cli(
            "res",
            &[
                "researcher",
                "study",
                "fetch",
                "--study",
                "onco-1",
                "-o",
                &out.display().to_string(),
            ],
        )
        .ok();
    let refused = fetched["refused"].as_array().unwrap();
    assert_eq!(refused.len(), 1, "{fetched}");
    assert_eq!(refused[0]["item"], dishonest.item_id.as_str());
    assert_eq!(fetched["items"].as_array().unwrap().len(), 2, "{fetched}");
    let written = files_under(&out, &[]);
    assert_eq!(written.len(), 2);
    for file in &written {
        let bytes = std::fs::read(file).unwrap();
        assert!(
            !contains(&bytes, b"Quayle"),
            "{} holds the name",
            file.display()
        );
        assert!(
            !contains(&bytes, b"123-45-6789"),
            "{} holds the SSN",
            file.display()
        );
    }
    assert!(
        written
            .iter()
            .any(|f| contains(&std::fs::read(f).unwrap(), b"718-7")),
        "the honest copy keeps its code"
    );
    let incidents: Vec<v1::AuditEntry> = s
        .audit()
        .await
        .into_iter()
        .filter(|e| e.action == v1::AuditAction::StudyIncident as i32)
        .collect();
    assert_eq!(incidents.len(), 1);
    assert_eq!(
        incidents[0].incident,
        v1::StudyIncident::DeidentificationFailed as i32
    );
    assert_eq!(
        (incidents[0].actor.as_str(), incidents[0].item.as_str()),
        ("res", dishonest.item_id.as_str())
    );
}
