//! The membership CA end to end: the real `medledger-ca` on loopback, driven through the real
//! `medledger` CLI (and, for requests the CLI would never send, the SDK).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use medledger_crypto::{
    ENROLLMENT_EXTENSION_OID, EnrollmentExtension, RootCertificate, Signature, SignatureDomain,
};
use medledger_tests::{CaProcess, CliResult, init_ca, medledger};
use serde_json::Value;

/// One CA with its directory, and a HOME for the CLI's wallets.
struct Fixture {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    ca_dir: PathBuf,
    ca: CaProcess,
}

impl Fixture {
    fn new() -> Fixture {
        Self::with_validity("365d")
    }

    fn with_validity(validity: &str) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let ca_dir = tmp.path().join("ca");
        std::fs::create_dir_all(&home).unwrap();
        init_ca(&ca_dir);
        let ca = CaProcess::start(&ca_dir, validity);
        Fixture {
            _tmp: tmp,
            home,
            ca_dir,
            ca,
        }
    }

    fn root(&self) -> String {
        self.ca_dir.join("ca-root.pem").display().to_string()
    }

    fn wallet(&self, name: &str) -> String {
        self.home.join("wallets").join(name).display().to_string()
    }

    /// Runs the CLI as the holder of wallet `name`.
    fn as_(&self, name: &str, args: &[&str]) -> CliResult {
        let wallet = self.wallet(name);
        let mut full = vec!["--wallet", wallet.as_str()];
        full.extend_from_slice(args);
        medledger(&self.home, &self.ca.url, &full)
    }

    fn enroll(&self, name: &str, secret: &str) -> CliResult {
        self.enroll_into(name, name, secret)
    }

    /// Enrolls `name` into the wallet called `wallet` (several wallets may hold one name).
    fn enroll_into(&self, wallet: &str, name: &str, secret: &str) -> CliResult {
        let wallet = self.wallet(wallet);
        let root = self.root();
        let args = [
            "--wallet",
            &wallet,
            "--ca-root",
            &root,
            "enroll",
            "--name",
            name,
            "--secret",
            secret,
        ];
        medledger(&self.home, &self.ca.url, &args)
    }

    fn enroll_admin(&self) {
        let secret = std::fs::read_to_string(self.ca_dir.join("admin.secret")).unwrap();
        self.enroll("admin", secret.trim()).ok();
    }

    fn register(&self, name: &str, role: &str, extra: &[&str]) -> CliResult {
        let mut args = vec!["admin", "register", "--name", name, "--role", role];
        args.extend_from_slice(extra);
        self.as_("admin", &args)
    }

    /// Registers `name` and returns its one-time secret.
    fn secret(&self, name: &str, role: &str, extra: &[&str]) -> String {
        let registered = self.register(name, role, extra).ok();
        registered["secret"]
            .as_str()
            .expect("register prints the secret")
            .to_string()
    }

    /// Registers and enrolls `name`; returns the wallet's `whoami`.
    fn member(&self, name: &str, role: &str, extra: &[&str]) -> Value {
        let secret = self.secret(name, role, extra);
        self.enroll(name, &secret).ok();
        self.as_(name, &["whoami"]).ok()
    }

    fn identities(&self) -> Vec<Value> {
        self.as_("admin", &["admin", "identities"]).ok()["identities"]
            .as_array()
            .unwrap()
            .clone()
    }

    fn identity_names(&self) -> Vec<String> {
        self.identities()
            .iter()
            .map(|i| i["name"].as_str().unwrap().to_string())
            .collect()
    }
}

/// The CA refused the caller's certificate at the TLS handshake, and the CLI named `why`.
#[track_caller]
fn expect_refused(result: CliResult, why: &str) {
    assert_eq!(
        result.error_kind(),
        "certificate_refused",
        "{:?}",
        result.json
    );
    assert!(
        result.error_message().contains(why),
        "{}",
        result.error_message()
    );
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_writes_secrets_owner_only() {
    let f = Fixture::new();
    assert_eq!(mode(&f.ca_dir.join("admin.secret")), 0o600);
    assert_eq!(mode(&f.ca_dir.join("ca-root.key")), 0o600);
    assert_eq!(mode(&f.ca_dir.join("tls/server.key")), 0o600);
    // A second init on the same directory refuses rather than overwriting the root.
    let again = std::process::Command::new(medledger_tests::binary("medledger-ca"))
        .args(["init", "--dir"])
        .arg(&f.ca_dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialized"));
}

#[test]
fn ca_info_works_without_a_certificate_and_shows_the_root_fingerprint() {
    let f = Fixture::new();
    let root = f.root();
    let info = medledger(&f.home, &f.ca.url, &["--ca-root", &root, "ca-info"]).ok();
    let pem = std::fs::read_to_string(f.ca_dir.join("ca-root.pem")).unwrap();
    let fingerprint = hex::encode(RootCertificate::from_pem(&pem).unwrap().fingerprint());
    assert_eq!(info["root_fingerprint"], fingerprint.as_str());
    assert_eq!(info["latest_revocation_sequence"], 0);
}

#[test]
fn register_and_enroll_a_clinician_and_a_patient() {
    let f = Fixture::new();
    f.enroll_admin();
    let clinician = f.member(
        "dr.alice",
        "clinician",
        &[
            "--attr",
            "license=NPI-1234567890",
            "--attr",
            "emergency=true@2026-01-01..2030-01-01",
        ],
    );
    assert_eq!(clinician["role"], "clinician");
    assert_eq!(clinician["valid_now"], true);
    let attributes = clinician["attributes"].as_array().unwrap();
    assert_eq!(attributes[0]["key"], "license");
    assert_eq!(attributes[1]["not_before"], "2026-01-01T00:00:00Z");
    assert_eq!(attributes[1]["not_after"], "2030-01-01T00:00:00Z");
    let patient = f.member("patient-0042", "patient", &[]);
    assert_eq!(patient["role"], "patient");

    // Keys were made on the client and are stored owner-only.
    let wallet = PathBuf::from(f.wallet("dr.alice"));
    assert_eq!(mode(&wallet.join("signing.key")), 0o600);
    assert_eq!(mode(&wallet.join("encryption.key")), 0o600);

    // The certificate carries the extension with role, attributes and the wallet's X25519 key.
    let pem = std::fs::read_to_string(wallet.join("cert.pem")).unwrap();
    let der = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
    let oid = x509_parser::oid_registry::Oid::from(ENROLLMENT_EXTENSION_OID).unwrap();
    let ext = cert
        .get_extension_unique(&oid)
        .unwrap()
        .expect("extension present");
    assert!(
        !ext.critical,
        "TLS stacks refuse unknown critical extensions"
    );
    let decoded = EnrollmentExtension::decode(ext.value).unwrap();
    assert_eq!(decoded.role.as_str(), "clinician");
    assert_eq!(
        decoded.encryption_key.to_string(),
        clinician["encryption_key"].as_str().unwrap()
    );
    assert_eq!(
        decoded.attribute_at("emergency", 1_800_000_000),
        Some("true")
    );
    assert_eq!(decoded.attribute_at("emergency", 1_900_000_000), None);

    // openssl shows the same in plain text, for operators.
    if let Ok(out) = std::process::Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(wallet.join("cert.pem"))
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("1.3.6.1.4.1.4242424242.1.1"), "{text}");
        assert!(
            text.contains("clinician") && text.contains("emergency") && text.contains("x25519:")
        );
        assert!(text.contains("ED25519"));
    }

    let names = f.identity_names();
    assert_eq!(names, ["admin", "dr.alice", "patient-0042"]);
}

#[test]
fn a_secret_is_single_use_and_a_wrong_one_is_unauthenticated() {
    let f = Fixture::new();
    f.enroll_admin();
    let secret = f.secret("nurse.bob", "clinician", &[]);

    let wrong = f.enroll("nurse.bob", "not-the-secret");
    assert_eq!(wrong.error_kind(), "unauthenticated", "{:?}", wrong.json);
    let unknown = f.enroll("nobody", &secret);
    assert_eq!(unknown.error_kind(), "unauthenticated");
    // Neither attempt wrote a wallet.
    assert!(
        !PathBuf::from(f.wallet("nurse.bob"))
            .join("cert.pem")
            .exists()
    );

    f.enroll("nurse.bob", &secret).ok();
    let reuse = f.enroll_into("nurse.bob2", "nurse.bob", &secret);
    assert_eq!(reuse.error_kind(), "unauthenticated");
    assert!(
        reuse.error_message().contains("used up"),
        "{}",
        reuse.error_message()
    );

    // The admin's bootstrap secret is single-use too.
    let admin_secret = std::fs::read_to_string(f.ca_dir.join("admin.secret")).unwrap();
    let again = f.enroll("admin-again", admin_secret.trim());
    assert_eq!(again.error_kind(), "unauthenticated");
}

#[test]
fn max_enrollments_allows_exactly_that_many() {
    let f = Fixture::new();
    f.enroll_admin();
    let secret = f.secret("peer-0", "peer", &["--max-enrollments", "2"]);
    let results: Vec<bool> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..5)
            .map(|i| {
                let f = &f;
                let secret = secret.clone();
                s.spawn(move || {
                    f.enroll_into(&format!("peer-0-{i}"), "peer-0", &secret)
                        .success
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(results.iter().filter(|ok| **ok).count(), 2, "{results:?}");
    let peer = f
        .identities()
        .into_iter()
        .find(|i| i["name"] == "peer-0")
        .unwrap();
    assert_eq!(peer["enrollments_used"], 2);
    assert_eq!(peer["certificates"].as_array().unwrap().len(), 2);
}

#[test]
fn only_admins_register_revoke_and_list() {
    let f = Fixture::new();
    f.enroll_admin();
    f.member("dr.alice", "clinician", &[]);
    for args in [
        vec!["admin", "register", "--name", "x", "--role", "patient"],
        vec!["admin", "revoke", "--name", "admin"],
        vec!["admin", "identities"],
    ] {
        let result = f.as_("dr.alice", &args);
        assert_eq!(
            result.error_kind(),
            "permission_denied",
            "{args:?}: {:?}",
            result.json
        );
    }
    // Nothing changed: no identity x, the admin is not revoked.
    assert_eq!(f.identity_names(), ["admin", "dr.alice"]);
    assert!(f.as_("admin", &["whoami"]).success);
    assert!(f.as_("admin", &["admin", "identities"]).success);
}

#[test]
fn malformed_registrations_are_invalid_arguments_and_change_nothing() {
    let f = Fixture::new();
    f.enroll_admin();
    let long_name = "n".repeat(65);
    let long_value = format!("note={}", "v".repeat(257));
    let cases: Vec<Vec<&str>> = vec![
        vec!["--name", "x1", "--role", "superuser"],
        vec!["--name", &long_name, "--role", "patient"],
        vec!["--name", "bell\u{7}name", "--role", "patient"],
        vec!["--name", "../etc", "--role", "patient"],
        vec![
            "--name",
            "x2",
            "--role",
            "patient",
            "--attr",
            "note=line\nbreak",
        ],
        vec!["--name", "x3", "--role", "patient", "--attr", &long_value],
        vec!["--name", "x4", "--role", "patient", "--attr", "Bad-Key=v"],
        vec![
            "--name",
            "x5",
            "--role",
            "patient",
            "--attr",
            "k=v@2027-01-01..2026-01-01",
        ],
        vec![
            "--name",
            "x6",
            "--role",
            "patient",
            "--max-enrollments",
            "1000",
        ],
    ];
    for case in cases {
        let mut args = vec!["admin", "register"];
        args.extend_from_slice(&case);
        let result = f.as_("admin", &args);
        assert_eq!(
            result.error_kind(),
            "invalid_argument",
            "{case:?}: {:?}",
            result.json
        );
    }
    f.register("dr.alice", "clinician", &[]).ok();
    let duplicate = f.register("dr.alice", "patient", &[]);
    assert_eq!(duplicate.error_kind(), "already_exists");
    assert_eq!(f.identity_names(), ["admin", "dr.alice"]);
    let alice = f
        .identities()
        .into_iter()
        .find(|i| i["name"] == "dr.alice")
        .unwrap();
    assert_eq!(
        alice["role"], "clinician",
        "the duplicate did not overwrite the first"
    );
}

#[test]
fn malformed_enrollments_are_invalid_arguments_and_spend_no_secret() {
    use medledger_proto::v1;
    use medledger_sdk::ca::{CaClient, TlsIdentity};

    let f = Fixture::new();
    f.enroll_admin();
    let secret = f.secret("dr.alice", "clinician", &[]);
    let root_pem = std::fs::read_to_string(f.ca_dir.join("ca-root.pem")).unwrap();
    let root = RootCertificate::from_pem(&root_pem).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut ca = CaClient::connect(&f.ca.url, root.der(), TlsIdentity::Anonymous)
            .await
            .unwrap();
        let good_csr = medledger_crypto::build_signing_request(
            &medledger_crypto::SigningIdentity::from_seed(&[5; 32]),
            "dr.alice",
        )
        .unwrap();
        let mut bad_signature = good_csr.clone();
        let last = bad_signature.len() - 1;
        bad_signature[last] ^= 1;
        let cases = [
            (b"not a csr".to_vec(), vec![1u8; 32]),
            (bad_signature, vec![1u8; 32]),
            (good_csr.clone(), vec![1u8; 31]),
            // An X25519 key of small order: nothing could be sealed or wrapped to it.
            (good_csr.clone(), vec![0u8; 32]),
        ];
        for (csr, key) in cases {
            let error = ca
                .enroll(v1::EnrollRequest {
                    name: "dr.alice".into(),
                    secret: secret.clone(),
                    csr_der: csr,
                    encryption_public_key: key,
                })
                .await
                .unwrap_err();
            assert_eq!(error.kind(), "invalid_argument", "{error}");
        }
        // An oversized request is refused without harming the CA.
        let error = ca
            .enroll(v1::EnrollRequest {
                name: "x".repeat(200_000),
                secret: secret.clone(),
                csr_der: vec![],
                encryption_public_key: vec![],
            })
            .await
            .unwrap_err();
        assert_ne!(error.kind(), "unauthenticated", "{error}");
        // The secret was not spent by any of this.
        ca.enroll(v1::EnrollRequest {
            name: "dr.alice".into(),
            secret: secret.clone(),
            csr_der: good_csr,
            encryption_public_key: vec![1u8; 32],
        })
        .await
        .unwrap();
    });
}

#[test]
fn calls_other_than_enroll_and_ca_info_need_a_certificate() {
    use medledger_proto::v1;
    use medledger_sdk::ca::{CaClient, TlsIdentity};

    let f = Fixture::new();
    let root_pem = std::fs::read_to_string(f.ca_dir.join("ca-root.pem")).unwrap();
    let root = RootCertificate::from_pem(&root_pem).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut ca = CaClient::connect(&f.ca.url, root.der(), TlsIdentity::Anonymous)
            .await
            .unwrap();
        ca.ca_info().await.unwrap();
        assert_eq!(ca.crl().await.unwrap_err().kind(), "unauthenticated");
        assert_eq!(
            ca.revocations(0).await.unwrap_err().kind(),
            "unauthenticated"
        );
        assert_eq!(
            ca.identities(String::new()).await.unwrap_err().kind(),
            "unauthenticated"
        );
        let register = ca
            .register(v1::RegisterRequest {
                name: "intruder".into(),
                role: "admin".into(),
                attributes: vec![],
                max_enrollments: 1,
            })
            .await
            .unwrap_err();
        assert_eq!(register.kind(), "unauthenticated");
    });
}

/// Issue 19 item 2: a renewal keeps the signing key unless asked, always makes a new
/// encryption key, and revokes the certificates it supersedes when the key changes (reason
/// superseded, or key compromise when the holder says so).
#[test]
fn reenroll_renews_the_certificate_and_revokes_what_a_new_key_supersedes() {
    let f = Fixture::new();
    f.enroll_admin();
    let before = f.member("dr.alice", "clinician", &["--attr", "department=oncology"]);
    let result = f.as_("dr.alice", &["reenroll"]).ok();
    let after = f.as_("dr.alice", &["whoami"]).ok();
    assert_ne!(before["serial"], after["serial"]);
    assert_eq!(result["serial"], after["serial"]);
    assert_eq!(
        before["signing_key"], after["signing_key"],
        "the key is kept"
    );
    assert_ne!(before["encryption_key"], after["encryption_key"]);
    assert_eq!(result["superseded"].as_array().unwrap().len(), 0);
    assert_eq!(
        before["attributes"], after["attributes"],
        "the identity is unchanged"
    );
    let certificates = |f: &Fixture| {
        f.identities()
            .into_iter()
            .find(|i| i["name"] == "dr.alice")
            .unwrap()["certificates"]
            .as_array()
            .unwrap()
            .clone()
    };
    let listed = certificates(&f);
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|c| c["revoked"] == false), "{listed:?}");
    // A new signing key: the two earlier certificates are revoked as superseded.
    let result = f.as_("dr.alice", &["reenroll", "--new-signing-key"]).ok();
    let newest = f.as_("dr.alice", &["whoami"]).ok();
    assert_ne!(after["signing_key"], newest["signing_key"]);
    assert_eq!(
        result["superseded"].as_array().unwrap().len(),
        2,
        "{result}"
    );
    let listed = certificates(&f);
    assert_eq!(listed.len(), 3);
    let revoked: Vec<_> = listed.iter().filter(|c| c["revoked"] == true).collect();
    assert_eq!(revoked.len(), 2, "{listed:?}");
    assert!(
        revoked
            .iter()
            .all(|c| c.to_string().to_lowercase().contains("superseded")),
        "{revoked:?}"
    );
    // For key compromise the CSR must carry a new key, and the old one is revoked so.
    let result = f.as_("dr.alice", &["reenroll", "--key-compromise"]).ok();
    assert_eq!(result["superseded"].as_array().unwrap().len(), 1);
    let listed = certificates(&f);
    assert!(
        listed
            .iter()
            .any(|c| c.to_string().to_lowercase().contains("compromise")),
        "{listed:?}"
    );
    // The newest certificate works for calls that need one.
    assert!(f.as_("dr.alice", &["reenroll"]).success);
}

#[test]
fn a_revoked_certificate_is_refused_at_the_handshake_and_listed_in_the_crl() {
    let f = Fixture::new();
    f.enroll_admin();
    let alice = f.member("dr.alice", "clinician", &[]);
    f.member("dr.bob", "clinician", &[]);
    assert!(f.as_("dr.alice", &["reenroll"]).success);
    let alice_after = f.as_("dr.alice", &["whoami"]).ok();

    let revoked = f
        .as_(
            "admin",
            &[
                "admin",
                "revoke",
                "--name",
                "dr.alice",
                "--reason",
                "key-compromise",
            ],
        )
        .ok();
    let records = revoked["revoked"].as_array().unwrap();
    assert_eq!(records.len(), 2, "both of alice's certificates");
    assert_eq!(records[0]["sequence"], 1);
    assert_eq!(records[1]["sequence"], 2);

    // Refused at the TLS handshake, and the client says why.
    let refused = f.as_("dr.alice", &["reenroll"]);
    expect_refused(refused, "revoked");
    // Bob is unaffected.
    assert!(f.as_("dr.bob", &["reenroll"]).success);

    // The CRL lists both serials, and is signed by the root.
    let crl_path = f.home.join("ca.crl.pem");
    f.as_(
        "admin",
        &["admin", "crl", "--out", crl_path.to_str().unwrap()],
    )
    .ok();
    let crl_pem = std::fs::read_to_string(&crl_path).unwrap();
    let crl_der = x509_parser::pem::parse_x509_pem(crl_pem.as_bytes())
        .unwrap()
        .1
        .contents;
    let (_, crl) = x509_parser::parse_x509_crl(&crl_der).unwrap();
    let serials: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| hex::encode(r.raw_serial()))
        .collect();
    assert!(serials.contains(&alice["serial"].as_str().unwrap().to_string()));
    assert!(serials.contains(&alice_after["serial"].as_str().unwrap().to_string()));
    assert_eq!(serials.len(), 2);
    let verified = std::process::Command::new("openssl")
        .args(["crl", "-noout", "-in"])
        .arg(&crl_path)
        .arg("-CAfile")
        .arg(f.ca_dir.join("ca-root.pem"))
        .output()
        .expect("openssl is installed (.ci/run installs it)");
    assert!(
        String::from_utf8_lossy(&verified.stderr).contains("verify OK"),
        "{}",
        String::from_utf8_lossy(&verified.stderr)
    );

    // The signed revocation records verify against the root key, in their own domain.
    let list = f.as_("admin", &["admin", "revocations"]).ok();
    assert_eq!(list["latest_sequence"], 2);
    assert_eq!(list["records"].as_array().unwrap().len(), 2);
    let since_one = f
        .as_("admin", &["admin", "revocations", "--since", "1"])
        .ok();
    assert_eq!(since_one["records"].as_array().unwrap().len(), 1);
    assert_eq!(since_one["records"][0]["sequence"], 2);

    // Revoking again changes nothing; the revoked name cannot be registered again.
    let again = f
        .as_("admin", &["admin", "revoke", "--name", "dr.alice"])
        .ok();
    assert_eq!(again["revoked"].as_array().unwrap().len(), 0);
    assert_eq!(
        f.register("dr.alice", "clinician", &[]).error_kind(),
        "already_exists"
    );
    let unknown = f.as_("admin", &["admin", "revoke", "--name", "nobody"]);
    assert_eq!(unknown.error_kind(), "not_found");
}

#[test]
fn revoking_one_certificate_by_serial_leaves_the_others() {
    let f = Fixture::new();
    f.enroll_admin();
    let secret = f.secret("peer-1", "peer", &["--max-enrollments", "2"]);
    f.enroll("peer-1", &secret).ok();
    let first = f.as_("peer-1", &["whoami"]).ok();
    f.enroll_into("peer-1b", "peer-1", &secret).ok();
    f.as_(
        "admin",
        &[
            "admin",
            "revoke",
            "--serial",
            first["serial"].as_str().unwrap(),
        ],
    )
    .ok();
    assert_eq!(
        f.as_("peer-1", &["reenroll"]).error_kind(),
        "certificate_refused"
    );
    assert!(f.as_("peer-1b", &["reenroll"]).success);
    let bad = f.as_("admin", &["admin", "revoke", "--serial", "zz"]);
    assert_eq!(bad.error_kind(), "invalid_argument");
    let missing = f.as_("admin", &["admin", "revoke", "--serial", "0102"]);
    assert_eq!(missing.error_kind(), "not_found");
}

#[test]
fn revocation_records_are_signed_by_the_root_for_their_domain() {
    use medledger_sdk::ca::{CaClient, TlsIdentity};
    use medledger_sdk::wallet::Wallet;
    use prost::Message;

    let f = Fixture::new();
    f.enroll_admin();
    f.member("dr.alice", "clinician", &[]);
    f.as_("admin", &["admin", "revoke", "--name", "dr.alice"])
        .ok();
    let admin = Wallet::open(Path::new(&f.wallet("admin"))).unwrap();
    let root = admin.root().unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let records = runtime.block_on(async {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut ca = CaClient::connect(&f.ca.url, root.der(), TlsIdentity::Wallet(&admin))
            .await
            .unwrap();
        ca.revocations(0).await.unwrap().records
    });
    assert_eq!(records.len(), 1);
    let signed = &records[0];
    let signature = Signature::from_slice(&signed.signature).unwrap();
    root.public_key()
        .verify(
            SignatureDomain::RevocationRecord,
            &signed.record,
            &signature,
        )
        .unwrap();
    assert!(
        root.public_key()
            .verify(SignatureDomain::Transaction, &signed.record, &signature)
            .is_err()
    );
    let record = medledger_proto::v1::RevocationRecord::decode(signed.record.as_slice()).unwrap();
    assert_eq!(record.name, "dr.alice");
    assert_eq!(record.sequence, 1);
}

#[test]
fn an_expired_certificate_is_refused_at_the_handshake() {
    // Certificates are backdated five minutes for clock skew, so a 2-second validity
    // expires 2 seconds after issue.
    let f = Fixture::with_validity("2s");
    let secret = std::fs::read_to_string(f.ca_dir.join("admin.secret")).unwrap();
    f.enroll("admin", secret.trim()).ok();
    std::thread::sleep(std::time::Duration::from_secs(4));
    let result = f.as_("admin", &["admin", "identities"]);
    expect_refused(result, "expired");
    let whoami = f.as_("admin", &["whoami"]).ok();
    assert_eq!(whoami["valid_now"], false);
}

/// The names in the certificate the CA presents now, as `openssl s_client` sees it.
fn presented_names(url: &str) -> String {
    let port = url.rsplit(':').next().unwrap();
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername localhost </dev/null \
         2>/dev/null | openssl x509 -noout -ext subjectAltName"
    );
    let output = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Issue 19 item 8: a running CA takes a TLS certificate renewed with a new name from the
/// same root, without a restart, and clients go on trusting it; and the CA says in its log
/// before a certificate it issued expires.
#[test]
fn the_ca_renews_its_tls_certificate_and_warns_before_expiry() {
    // 20-second certificates: reported 5 s before their end.
    let f = Fixture::with_validity("20s");
    f.enroll_admin();
    assert!(!presented_names(&f.ca.url).contains("ca2.hospital.example"));
    let renewed = medledger_tests::binaries()
        .ca_tls_renew(&f.ca_dir, &["ca2.hospital.example"])
        .output()
        .unwrap();
    assert!(
        renewed.status.success(),
        "{}",
        String::from_utf8_lossy(&renewed.stderr)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let names = presented_names(&f.ca.url);
        if names.contains("ca2.hospital.example") {
            assert!(
                names.contains("localhost") && names.contains("127.0.0.1"),
                "{names}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the CA still presents its old certificate: {names}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    // The same root: the CLI, trusting only it, still talks to the CA.
    f.as_("admin", &["ca-info"]).ok();
    // The admin's certificate nears its end: the CA's log says so.
    let log = f.ca_dir.with_extension("log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text
            .lines()
            .any(|line| line.contains("expires soon") && line.contains("admin"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no expiry warning in the CA's log:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
}

#[test]
fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let ours = Fixture::new();
    let theirs = Fixture::new();
    theirs.enroll_admin();
    // Their admin, talking to our CA (trusting our root for the server), is refused.
    let wallet = theirs.wallet("admin");
    let result = medledger(
        &theirs.home,
        &ours.ca.url,
        &[
            "--wallet",
            &wallet,
            "--ca-root",
            &ours.root(),
            "admin",
            "identities",
        ],
    );
    expect_refused(result, "not issued by this CA");
    // And a client that trusts another root refuses our CA's server certificate.
    let mismatch = medledger(
        &ours.home,
        &ours.ca.url,
        &["--ca-root", &theirs.root(), "ca-info"],
    );
    assert!(!mismatch.success);
}

#[test]
fn a_restarted_ca_keeps_identities_secrets_and_revocations() {
    let mut f = Fixture::new();
    f.enroll_admin();
    f.member("dr.alice", "clinician", &[]);
    f.member("patient-7", "patient", &[]);
    let pending = f.secret("dr.carol", "clinician", &[]);
    f.as_("admin", &["admin", "revoke", "--name", "dr.alice"])
        .ok();

    f.ca.kill();
    f.ca = CaProcess::start(&f.ca_dir, "365d");

    assert_eq!(
        f.identity_names(),
        ["admin", "dr.alice", "dr.carol", "patient-7"]
    );
    assert_eq!(
        f.as_("dr.alice", &["reenroll"]).error_kind(),
        "certificate_refused"
    );
    assert!(f.as_("patient-7", &["reenroll"]).success);
    f.enroll("dr.carol", &pending).ok();
    let list = f.as_("admin", &["admin", "revocations"]).ok();
    assert_eq!(list["latest_sequence"], 1);
    // Numbering continues after the restart.
    let more = f
        .as_("admin", &["admin", "revoke", "--name", "patient-7"])
        .ok();
    assert_eq!(more["revoked"][0]["sequence"], 2);
}

#[test]
fn concurrent_registrations_all_land_with_distinct_secrets() {
    let f = Fixture::new();
    f.enroll_admin();
    let secrets: Vec<String> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let f = &f;
                s.spawn(move || f.secret(&format!("member-{i:02}"), "patient", &[]))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let unique: std::collections::HashSet<_> = secrets.iter().collect();
    assert_eq!(unique.len(), 12);
    assert_eq!(f.identity_names().len(), 13);
}
