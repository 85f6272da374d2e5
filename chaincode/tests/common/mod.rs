//! A small world for chaincode tests: identities of every role, one in-memory ledger, and
//! helpers that encode arguments, run a call at a consensus time and commit it.
#![allow(dead_code)]

use medledger_chaincode::{
    ChaincodeError, Creator, CreatorAttribute, MemoryLedger, Role, invoke, query,
};
use medledger_proto::v1;
use prost::Message;

pub const T0: i64 = 1_800_000_000;
pub const HOUR: i64 = 3600;
pub const DAY: i64 = 24 * HOUR;

pub fn creator(name: &str, role: Role) -> Creator {
    Creator {
        name: name.into(),
        role,
        attributes: vec![],
        cert_hash: [1; 32],
        encryption_key: [2; 32],
        signing_key: [3; 32],
    }
}

pub fn patient(n: u8) -> Creator {
    creator(&format!("patient-{n}"), Role::Patient)
}
pub fn clinician(name: &str) -> Creator {
    creator(name, Role::Clinician)
}
/// A clinician whose certificate says emergency=true from `from` until `until`.
pub fn emergency_clinician(name: &str, from: Option<i64>, until: Option<i64>) -> Creator {
    let mut c = clinician(name);
    c.attributes.push(CreatorAttribute {
        key: "emergency".into(),
        value: "true".into(),
        not_before: from,
        not_after: until,
    });
    c
}
pub fn researcher(name: &str) -> Creator {
    creator(name, Role::Researcher)
}
pub fn auditor() -> Creator {
    creator("auditor-1", Role::Auditor)
}
pub fn admin() -> Creator {
    creator("admin", Role::Admin)
}

pub fn pseudonym(n: u8) -> Vec<u8> {
    vec![n; 32]
}

/// Patient `n`'s record key (from the pseudonym key [n; 32]), as their client derives it.
pub fn record_key(n: u8) -> medledger_crypto::EncryptionKey {
    medledger_crypto::derive_record_encryption_key(&medledger_crypto::PatientKey::from_bytes(
        [n; 32],
    ))
}

/// The author every test reason is sealed under (the clinician tests break the glass as).
pub const AUTHOR: &str = "dr.er";

/// `text` by [`AUTHOR`] about `category` of patient `n`'s record, sealed to `readers` as a
/// clinician's client seals it.
pub fn seal_to(
    n: u8,
    category: &str,
    text: &str,
    readers: &[medledger_crypto::EncryptionPublicKey],
) -> v1::SealedText {
    let pseudonym = pseudonym(n);
    let sealed = medledger_crypto::seal_text(
        text,
        readers,
        medledger_crypto::WrapContext::TextKey {
            pseudonym: &pseudonym,
            category,
            author: AUTHOR,
        },
        &mut rand_core::OsRng,
    )
    .unwrap();
    sealed_proto(sealed)
}

/// A sealed text as the ledger carries it.
pub fn sealed_proto(sealed: medledger_crypto::SealedText) -> v1::SealedText {
    v1::SealedText {
        ciphertext: sealed.ciphertext,
        key_commitment: sealed.key_commitment,
        readers: sealed
            .readers
            .into_iter()
            .map(|(key, wrapped)| v1::SealedTextReader {
                public_key: key.to_bytes().to_vec(),
                wrapped_key: wrapped,
            })
            .collect(),
    }
}

/// `text` sealed to patient `n`'s record key alone (a network naming no auditor).
pub fn sealed_reason(n: u8, category: &str, text: &str) -> Option<v1::SealedText> {
    Some(seal_to(n, category, text, &[record_key(n).public_key()]))
}

/// What a reader opens of a sealed reason about `category` of patient `n`'s record.
pub fn open_reason(
    key: &medledger_crypto::EncryptionKey,
    n: u8,
    category: &str,
    sealed: &v1::SealedText,
) -> Result<String, medledger_crypto::SealError> {
    let pseudonym = pseudonym(n);
    let sealed = medledger_crypto::SealedText {
        ciphertext: sealed.ciphertext.clone(),
        key_commitment: sealed.key_commitment.clone(),
        readers: sealed
            .readers
            .iter()
            .map(|r| {
                (
                    medledger_crypto::EncryptionPublicKey::from_slice(&r.public_key).unwrap(),
                    r.wrapped_key.clone(),
                )
            })
            .collect(),
    };
    medledger_crypto::open_text(
        key,
        &sealed,
        medledger_crypto::WrapContext::TextKey {
            pseudonym: &pseudonym,
            category,
            author: AUTHOR,
        },
    )
}

pub struct World {
    pub ledger: MemoryLedger,
}

impl World {
    pub fn new() -> Self {
        World {
            ledger: MemoryLedger::new(),
        }
    }

    /// Runs a transaction and commits it (as a peer does, success or not).
    pub fn call<M: Message>(
        &mut self,
        who: &Creator,
        t: i64,
        function: &str,
        args: &M,
    ) -> Result<Vec<u8>, ChaincodeError> {
        let mut stub = self.ledger.transaction(who.clone(), t);
        let result = invoke(&mut stub, function, &args.encode_to_vec());
        stub.commit();
        result
    }

    /// Runs a transaction carrying `values` as private data (the ledger keeps it:
    /// `MemoryLedger::keep_private_data`); `build` makes its arguments from the values'
    /// commitments. Commits it, as a peer does, success or not.
    pub fn call_private<M: Message>(
        &mut self,
        who: &Creator,
        t: i64,
        function: &str,
        values: &[Vec<u8>],
        build: impl FnOnce(&[[u8; 32]]) -> M,
    ) -> Result<Vec<u8>, ChaincodeError> {
        let (mut stub, commitments) = self.ledger.private_transaction(who.clone(), t, values);
        let args = build(&commitments);
        let result = invoke(&mut stub, function, &args.encode_to_vec());
        stub.commit();
        result
    }

    /// Runs a transaction and decodes its result.
    pub fn call_decode<M: Message, R: Message + Default>(
        &mut self,
        who: &Creator,
        t: i64,
        function: &str,
        args: &M,
    ) -> Result<R, ChaincodeError> {
        let bytes = self.call(who, t, function, args)?;
        Ok(R::decode(bytes.as_slice()).expect("results decode"))
    }

    pub fn query<M: Message, R: Message + Default>(
        &mut self,
        who: &Creator,
        t: i64,
        function: &str,
        args: &M,
    ) -> Result<R, ChaincodeError> {
        let stub = self.ledger.query_stub(who.clone(), t);
        let bytes = query(&stub, function, &args.encode_to_vec())?;
        Ok(R::decode(bytes.as_slice()).expect("query results decode"))
    }

    /// Registers patient `n` (pseudonym [n; 32]) with keys for the three default categories.
    pub fn register_patient(&mut self, n: u8, t: i64) {
        let args = v1::RegisterPatientArgs {
            pseudonym: pseudonym(n),
            owner_encryption_key: record_key(n).public_key().to_bytes().to_vec(),
            category_keys: medledger_chaincode::DEFAULT_CATEGORIES
                .iter()
                .map(|c| v1::CategoryKey {
                    category: c.to_string(),
                    epoch: 0,
                    public_key: vec![n; 32],
                    since: 0,
                    owner_signature: vec![n; 64],
                })
                .collect(),
        };
        self.call(&patient(n), t, "register_patient", &args)
            .expect("patient registers");
    }

    #[allow(clippy::too_many_arguments)] // mirrors GrantArgs, plus the call's time
    pub fn grant(
        &mut self,
        n: u8,
        grantee: &str,
        category: &str,
        rights: &[v1::Right],
        from: i64,
        until: i64,
        t: i64,
    ) -> Result<String, ChaincodeError> {
        let args = grant_args(n, grantee, category, rights, from, until);
        self.call(&patient(n), t, "grant", &args)
            .map(|bytes| v1::IdResult::decode(bytes.as_slice()).unwrap().id)
    }

    pub fn add_item(
        &mut self,
        who: &Creator,
        n: u8,
        item: &str,
        category: &str,
        t: i64,
    ) -> Result<Vec<u8>, ChaincodeError> {
        self.call(who, t, "add_item", &item_args(n, item, category, 1))
    }

    pub fn access(
        &mut self,
        who: &Creator,
        n: u8,
        item: &str,
        t: i64,
    ) -> Result<v1::RecordAccessResult, ChaincodeError> {
        let args = v1::RecordAccessArgs {
            pseudonym: pseudonym(n),
            item_id: item.into(),
        };
        self.call(who, t, "record_access", &args)
            .map(|bytes| v1::RecordAccessResult::decode(bytes.as_slice()).unwrap())
    }

    pub fn audit(&mut self, n: u8, t: i64) -> Vec<v1::AuditEntry> {
        let args = v1::AuditTrailArgs {
            pseudonym: pseudonym(n),
            after_seq: 0,
            limit: 500,
        };
        let trail: v1::AuditTrail = self.query(&patient(n), t, "audit_trail", &args).unwrap();
        trail.entries
    }

    pub fn register_study(&mut self, researcher_name: &str, id: &str, t: i64) {
        let args = v1::RegisterStudyArgs {
            id: id.into(),
            title: "Dose response".into(),
            protocol_hash: vec![9; 32],
            study_key: vec![8; 32],
            study_key_signature: vec![8; 64],
        };
        self.call(&researcher(researcher_name), t, "register_study", &args)
            .expect("study registers");
    }
}

pub fn grant_args(
    n: u8,
    grantee: &str,
    category: &str,
    rights: &[v1::Right],
    from: i64,
    until: i64,
) -> v1::GrantArgs {
    let shares = rights.contains(&v1::Right::Share);
    v1::GrantArgs {
        pseudonym: pseudonym(n),
        grantee: grantee.into(),
        category: category.into(),
        rights: rights.iter().map(|r| *r as i32).collect(),
        from,
        until,
        study_id: if shares {
            "study-1".into()
        } else {
            String::new()
        },
        anonymize: false,
        study_pseudonym: if shares {
            study_pseudonym(n, "study-1")
        } else {
            Vec::new()
        },
        key_envelope: vec![0xee; 80],
        from_commit: false,
        duration_seconds: 0,
        study_owner_key: if shares {
            study_identity(n, "study-1")
                .verifying_key()
                .to_bytes()
                .to_vec()
        } else {
            Vec::new()
        },
        study_owner_signature: if shares {
            study_signature(n, "study-1", &pseudonym(n))
        } else {
            Vec::new()
        },
        key_envelope_commitment: Vec::new(),
    }
}

/// Patient `n`'s ownership key of study `study` (docs/adr/0014), from the pseudonym key
/// `[n; 32]`.
pub fn study_identity(n: u8, study: &str) -> medledger_crypto::SigningIdentity {
    medledger_crypto::derive_study_identity(
        &medledger_crypto::PatientKey::from_bytes([n; 32]),
        study,
    )
}

/// Patient `n`'s pseudonym in study `study`: its ownership key's hash.
pub fn study_pseudonym(n: u8, study: &str) -> Vec<u8> {
    let key = study_identity(n, study).verifying_key().to_bytes();
    medledger_crypto::study_pseudonym_of(study, &key).0.to_vec()
}

/// Patient `n`'s ownership key of `study` signing a grant into it on `record`.
pub fn study_signature(n: u8, study: &str, record: &[u8]) -> Vec<u8> {
    study_identity(n, study)
        .sign(
            medledger_crypto::SignatureDomain::StudyGrant,
            &medledger_crypto::study_grant_statement(study, record),
        )
        .to_bytes()
        .to_vec()
}

pub fn item_args(n: u8, item: &str, category: &str, epoch: u32) -> v1::AddItemArgs {
    v1::AddItemArgs {
        pseudonym: pseudonym(n),
        item_id: item.into(),
        category: category.into(),
        path: format!("patients/{}/{category}/{item}", hex::encode(pseudonym(n))),
        sha256: vec![7; 32],
        size: 1024,
        wrapped_dek: vec![6; 80],
        key_epoch: epoch,
        wrapped_dek_commitment: Vec::new(),
    }
}

/// Whether `needle` occurs in `haystack`.
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The field an `INVALID_ARGUMENT` names; panics on any other result.
pub fn invalid_field(result: Result<Vec<u8>, ChaincodeError>) -> &'static str {
    match result {
        Err(ChaincodeError::InvalidArgument { field, .. }) => field,
        other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
    }
}

pub fn denial(result: Result<impl std::fmt::Debug, ChaincodeError>) -> medledger_chaincode::Denial {
    match result {
        Err(ChaincodeError::Denied { reason, .. }) => reason,
        other => panic!("expected a denial, got {other:?}"),
    }
}

/// Sharing item `source` of patient `n` into `study` as `copy`, under patient `n`'s study
/// pseudonym there ([`study_pseudonym`]), the one the grants in these tests carry.
pub fn share_args(
    n: u8,
    source: &str,
    study: &str,
    copy: &str,
    anonymized: bool,
) -> v1::ShareForStudyArgs {
    let study_p = hex::encode(study_pseudonym(n, study));
    v1::ShareForStudyArgs {
        pseudonym: pseudonym(n),
        source_item_id: source.into(),
        study_id: study.into(),
        item_id: copy.into(),
        path: format!("studies/{study}/{study_p}/{copy}"),
        sha256: vec![3; 32],
        size: 10,
        wrapped_dek: vec![4; 80],
        anonymized,
        deid_profile: if anonymized {
            "safe-harbor-allowlist".into()
        } else {
            String::new()
        },
        deid_profile_version: u32::from(anonymized),
        deid_year: if anonymized { 2026 } else { 0 },
        wrapped_dek_commitment: Vec::new(),
    }
}
