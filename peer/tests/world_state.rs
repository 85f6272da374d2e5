//! The two world states block execution runs on — the peer's RocksDB ledger and the
//! auditor's memory — fed the same commits, answer every read alike: gets, prefix and range
//! scans with limits, key history, the transaction index, certificates and revocations. A
//! difference here would make `ledger verify` reject a correct chain (or pass a wrong one).

use medledger_execution::genesis::Genesis;
use medledger_execution::memory::MemoryState;
use medledger_execution::state::{BlockCommit, HistoryEntry, TxLocation, WorldState};
use medledger_peer::execute::{LedgerState, Revocations};
use medledger_peer::ledger::Ledger;
use medledger_proto::v1;
use prost::Message;

fn genesis() -> Genesis {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/genesis.pb");
    let bytes = std::fs::read(path).unwrap();
    Genesis::from_block(v1::Block::decode(bytes.as_slice()).unwrap()).unwrap()
}

/// xorshift64*: reproducible inputs without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// A key from a small alphabet, so scans, prefixes and overwrites collide often.
    fn key(&mut self) -> String {
        let len = 1 + self.below(4);
        (0..len)
            .map(|_| ["a", "b", "a/", "b/", "\u{e9}"][self.below(5) as usize])
            .collect()
    }
}

fn commit(rng: &mut Rng, number: u64, previous: &v1::BlockHeader) -> BlockCommit {
    let mut state = std::collections::BTreeMap::new();
    let mut history = Vec::new();
    let mut tx_index = Vec::new();
    for index in 0..rng.below(4) as u32 {
        let location = TxLocation {
            block: number,
            index,
        };
        let tx_id = [rng.next() as u8; 32];
        tx_index.push((tx_id, location));
        for _ in 0..rng.below(5) {
            let key = rng.key();
            let value = (rng.below(4) != 0).then(|| rng.next().to_be_bytes().to_vec());
            history.push(HistoryEntry {
                key: key.clone(),
                location,
                tx_id,
                time_s: number as i64,
                value: value.clone(),
            });
            state.insert(key, (value, location));
        }
    }
    let revocations = if rng.below(5) == 0 {
        vec![(vec![rng.below(8) as u8], number)]
    } else {
        Vec::new()
    };
    BlockCommit {
        block: v1::Block {
            header: Some(v1::BlockHeader {
                number,
                prev_hash: medledger_execution::block::header_hash(previous).to_vec(),
                ..Default::default()
            }),
            ..Default::default()
        },
        state: state.into_iter().map(|(k, (v, l))| (k, v, l)).collect(),
        history,
        envelope_index: tx_index.iter().map(|(id, l)| ([!id[0]; 32], *l)).collect(),
        tx_index,
        certificates: vec![([number as u8; 32], vec![number as u8; 3])],
        revocations,
        revocation_records: Vec::new(),
        messages: Vec::new(),
        chaincode_panics: Vec::new(),
        result_leaves: Vec::new(),
        envelope_hashes: Vec::new(),
        configuration: (rng.below(7) == 0).then(|| (number, vec![number as u8; 5], [3; 32])),
        ends_epoch: false,
        private_data: Vec::new(),
        private_purges: Vec::new(),
    }
}

#[test]
fn rocksdb_and_memory_answer_every_read_alike() {
    let genesis = genesis();
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), &genesis).unwrap();
    let mut memory = MemoryState::new(&genesis);
    let mut rng = Rng(0x5eed);
    let mut tx_ids = Vec::new();
    for number in 1..=60 {
        let previous = memory.header(number - 1).unwrap();
        let c = commit(&mut rng, number, &previous);
        tx_ids.extend(c.tx_index.iter().map(|(id, _)| *id));
        ledger.commit_block(&c, &[], &[], &[]).unwrap();
        memory.apply(&c).unwrap();
        let revocations = Revocations::load(&ledger).unwrap();
        let disk = LedgerState::new(&ledger, &revocations);
        assert_eq!(disk.header(number).unwrap(), memory.header(number).unwrap());
        assert_eq!(disk.revocation_sequence(), memory.revocation_sequence());
        assert_eq!(
            disk.configuration().unwrap(),
            memory.configuration().unwrap()
        );
        for serial in 0..8u8 {
            assert_eq!(disk.is_revoked(&[serial]), memory.is_revoked(&[serial]));
        }
        for _ in 0..40 {
            let (key, other) = (rng.key(), rng.key());
            let limit = rng.below(6) as usize;
            assert_eq!(
                disk.get(&key).unwrap(),
                memory.get(&key).unwrap(),
                "get {key:?}"
            );
            let start = if key < other {
                other.clone()
            } else {
                key.clone()
            };
            assert_eq!(
                disk.scan(&key, &start, None, limit).unwrap(),
                memory.scan(&key, &start, None, limit).unwrap(),
                "scan prefix {key:?} from {start:?}, limit {limit}"
            );
            assert_eq!(
                disk.scan("", &key, Some(&other), limit).unwrap(),
                memory.scan("", &key, Some(&other), limit).unwrap(),
                "range {key:?}..{other:?}, limit {limit}"
            );
            assert_eq!(
                disk.history(&key, limit).unwrap(),
                memory.history(&key, limit).unwrap(),
                "history {key:?}, limit {limit}"
            );
            let hash = [rng.below(70) as u8; 32];
            assert_eq!(
                disk.certificate(&hash).unwrap(),
                memory.certificate(&hash).unwrap()
            );
        }
        for id in &tx_ids {
            assert_eq!(
                disk.tx_location(id).unwrap(),
                memory.tx_location(id).unwrap()
            );
            let envelope = [!id[0]; 32];
            assert_eq!(
                disk.envelope_location(&envelope).unwrap(),
                memory.envelope_location(&envelope).unwrap()
            );
        }
    }
}

#[test]
fn memory_refuses_a_block_out_of_order() {
    let genesis = genesis();
    let mut memory = MemoryState::new(&genesis);
    let previous = memory.header(0).unwrap();
    let mut rng = Rng(1);
    let skipped = commit(&mut rng, 2, &previous);
    assert!(memory.apply(&skipped).is_err());
    assert_eq!(memory.height(), 0);
    assert!(memory.apply(&BlockCommit::default()).is_err());
}
