//! Fuzz target for revocation pages as peers serve them
//! (`medledger_execution::revocations::RevocationLog::take_page`), cargo-afl. A CA key made
//! from a fixed seed signs records 1–6 at start. The input is a run of answers from lying
//! peers, each `[from: u8][length: u16 LE][GetRevocationsResponse]`, taken in one after the
//! other. Properties: no input panics; every serial taken in is the one the CA signed for
//! that sequence and none is taken twice; a page called whole (worth asking past) holds only
//! the CA's records in their places; where to ask from never moves back, and the log counts
//! exactly what it returned. Seeds (`fuzz/corpus/revocations/`): true pages, written
//! by this binary with `MEDLEDGER_REVOCATION_SEEDS=DIR`.

use std::collections::BTreeMap;

use medledger_crypto::{SignatureDomain, SigningIdentity, VerifyingKey};
use medledger_execution::revocations::RevocationLog;
use medledger_proto::v1;
use prost::Message;

/// Records the CA signed.
const SIGNED: u64 = 6;

struct Fixture {
    ca: VerifyingKey,
    /// Sequence → the signed record and its serial.
    records: BTreeMap<u64, (v1::SignedRevocationRecord, Vec<u8>)>,
}

fn fixture() -> Fixture {
    let ca = SigningIdentity::from_seed(&[0x5a; 32]);
    let records = (1..=SIGNED)
        .map(|sequence| {
            let serial = vec![sequence as u8; 1 + sequence as usize];
            let record = v1::RevocationRecord {
                sequence,
                serial: serial.clone(),
                certificate_hash: vec![sequence as u8; 32],
                ..Default::default()
            }
            .encode_to_vec();
            let signature = ca
                .sign(SignatureDomain::RevocationRecord, &record)
                .to_bytes()
                .to_vec();
            (
                sequence,
                (v1::SignedRevocationRecord { record, signature }, serial),
            )
        })
        .collect();
    Fixture {
        ca: ca.verifying_key(),
        records,
    }
}

fn run(mut data: &[u8], fx: &Fixture) {
    let mut log = RevocationLog::new();
    let mut taken: BTreeMap<Vec<u8>, ()> = BTreeMap::new();
    while data.len() >= 3 {
        let from = u64::from(data[0]);
        let length = usize::from(u16::from_le_bytes([data[1], data[2]]));
        let rest = &data[3..];
        let (page, after) = rest.split_at(length.min(rest.len()));
        data = after;
        let Ok(answer) = v1::GetRevocationsResponse::decode(page) else {
            continue;
        };
        let before = log.first_unknown();
        let page = log.take_page(&fx.ca, from, &answer.records);
        assert!(
            log.first_unknown() >= before,
            "where to ask from moved back"
        );
        if page.whole {
            // A whole page holds only the CA's records, each in its place.
            for (offset, signed) in answer.records.iter().enumerate() {
                let sequence = from + offset as u64;
                assert!(
                    fx.records.get(&sequence).is_some_and(|(r, _)| r == signed)
                        || log.holds(sequence),
                    "a page called whole holds a record the CA did not sign there"
                );
            }
        }
        for serial in page.serials {
            assert!(
                fx.records.values().any(|(_, s)| *s == serial),
                "a serial the CA did not sign"
            );
            assert!(taken.insert(serial, ()).is_none(), "a serial taken twice");
        }
        assert_eq!(
            log.len(),
            taken.len() as u64,
            "the log counts what it returned"
        );
        for (sequence, (_, serial)) in &fx.records {
            assert_eq!(
                log.holds(*sequence),
                taken.contains_key(serial),
                "a sequence held without its serial, or the reverse"
            );
        }
    }
}

/// An answer as the input format frames it.
fn framed(from: u8, records: Vec<v1::SignedRevocationRecord>) -> Vec<u8> {
    let page = v1::GetRevocationsResponse { records }.encode_to_vec();
    let mut out = vec![from];
    out.extend((page.len() as u16).to_le_bytes());
    out.extend(page);
    out
}

fn main() {
    let fx = fixture();
    if let Some(dir) = std::env::var_os("MEDLEDGER_REVOCATION_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).expect("seed directory");
        let all = |from: u64| -> Vec<v1::SignedRevocationRecord> {
            fx.records
                .range(from..)
                .map(|(_, (record, _))| record.clone())
                .collect()
        };
        let seeds = [
            framed(1, all(1)),
            [framed(4, all(4)), framed(1, all(1))].concat(),
            [framed(1, all(1)[..2].to_vec()), framed(3, all(3))].concat(),
        ];
        for (i, seed) in seeds.iter().enumerate() {
            run(seed, &fx);
            std::fs::write(dir.join(format!("pages-{i}")), seed).expect("write a seed");
        }
        return;
    }
    afl::fuzz!(|data: &[u8]| run(data, &fx));
}
