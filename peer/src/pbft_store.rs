//! The replica's durable PBFT state in the ledger's `pbft` column family, written as the
//! difference from what is already on disk (the state holds up to thousands of batches; a
//! persist writes only what changed).
//!
//! Keys: `view`, `last_timestamp_ms`, `stable` (checkpoint proof), `installed_view`,
//! `new_view` (a `ReplicaMessage` holding the new view this peer sent as primary),
//! `accepted/<seq>`, `prepared/<seq>`, `committed/<seq>` (sequence numbers big-endian). Committed batches at or
//! below the ledger's height are deleted with their block: the block holds them.
//! `executed_tx` is not stored; the ledger's transaction index replaces it (see the core).

use std::collections::{BTreeMap, BTreeSet};

use medledger_pbft as pbft;
use medledger_proto::v1;
use prost::Message;

use crate::ledger::{Ledger, LedgerError, be_u64};
use crate::wire;

const VIEW: &[u8] = b"view";
const LAST_TIMESTAMP: &[u8] = b"last_timestamp_ms";
const STABLE: &[u8] = b"stable";
const INSTALLED_VIEW: &[u8] = b"installed_view";
const NEW_VIEW: &[u8] = b"new_view";
const ACCEPTED: &[u8] = b"accepted/";
const PREPARED: &[u8] = b"prepared/";
const COMMITTED: &[u8] = b"committed/";

fn key(prefix: &[u8], seq: pbft::Seq) -> Vec<u8> {
    [prefix, &seq.to_be_bytes()].concat()
}

pub fn committed_key(seq: pbft::Seq) -> Vec<u8> {
    key(COMMITTED, seq)
}

fn corrupt(why: impl ToString) -> LedgerError {
    crate::ledger::corrupt("pbft", why)
}

/// The new view stored under `new_view`, if it decodes as one.
fn decode_new_view(bytes: &[u8]) -> Option<pbft::Signed<pbft::NewView>> {
    let message = v1::ReplicaMessage::decode(bytes).ok()?;
    let from = match &message.kind {
        Some(v1::replica_message::Kind::NewView(nv)) => nv.from,
        _ => return None,
    };
    match wire::from_proto(message, from).ok()? {
        pbft::Message::NewView(nv) => Some(nv),
        _ => None,
    }
}

/// What is on disk, in summary, to compute the next difference.
#[derive(Default)]
pub struct PbftStore {
    view: pbft::View,
    last_timestamp_ms: u64,
    stable_seq: pbft::Seq,
    installed_view: Option<pbft::View>,
    /// The view and signature of the new view on disk.
    new_view: Option<(pbft::View, Vec<u8>)>,
    accepted: BTreeMap<pbft::Seq, (pbft::View, pbft::Digest)>,
    prepared: BTreeMap<pbft::Seq, (pbft::View, pbft::Digest)>,
    committed: BTreeSet<pbft::Seq>,
}

impl PbftStore {
    /// Loads the durable state; committed batches the ledger already holds are dropped.
    pub fn load(ledger: &Ledger) -> Result<(PbftStore, pbft::DurableState), LedgerError> {
        let height = ledger.height();
        let mut durable = pbft::DurableState::default();
        for (k, v) in ledger.read_pbft()? {
            if k == VIEW {
                durable.view = be_u64(&v).ok_or_else(|| corrupt("view"))?;
            } else if k == LAST_TIMESTAMP {
                durable.last_timestamp_ms = be_u64(&v).ok_or_else(|| corrupt("timestamp"))?;
            } else if k == STABLE {
                let proof = v1::PbftCheckpointProof::decode(v.as_slice()).map_err(corrupt)?;
                durable.stable = wire::checkpoint_proof_from_proto(proof).map_err(corrupt)?;
            } else if k == INSTALLED_VIEW {
                durable.installed_view = Some(be_u64(&v).ok_or_else(|| corrupt("installed_view"))?);
            } else if k == NEW_VIEW {
                // Optional (only sent again to a replica that missed it; the core checks it is
                // ours and signed): one that does not decode is dropped with a warning, not a
                // reason to refuse to start.
                match decode_new_view(&v) {
                    Some(nv) => durable.new_view = Some(nv),
                    None => tracing::warn!(
                        "the new view stored in the pbft column does not decode; it is dropped \
                         (a replica that missed it gets it from the next view change)"
                    ),
                }
            } else if let Some(seq) = k.strip_prefix(ACCEPTED).and_then(be_u64) {
                let view = be_u64(&v).ok_or_else(|| corrupt("accepted"))?;
                let digest: pbft::Digest = v
                    .get(8..40)
                    .and_then(|d| d.try_into().ok())
                    .ok_or_else(|| corrupt("accepted"))?;
                durable.accepted.insert(seq, (view, digest));
            } else if let Some(seq) = k.strip_prefix(PREPARED).and_then(be_u64) {
                let proof = v1::PbftPreparedProof::decode(v.as_slice()).map_err(corrupt)?;
                durable
                    .prepared
                    .insert(seq, wire::prepared_from_proto(proof).map_err(corrupt)?);
            } else if let Some(seq) = k.strip_prefix(COMMITTED).and_then(be_u64)
                && seq > height
            {
                let c = v1::PbftCommittedBatch::decode(v.as_slice()).map_err(corrupt)?;
                durable
                    .committed
                    .insert(seq, wire::committed_from_proto(c).map_err(corrupt)?);
            }
        }
        // The last consensus time is the ledger's when the ledger is ahead of the state.
        let last_block_time = ledger.header(height)?.time_ms.max(0) as u64;
        if height > 0 {
            durable.last_timestamp_ms = durable.last_timestamp_ms.max(last_block_time);
        }
        let store = PbftStore {
            view: durable.view,
            last_timestamp_ms: durable.last_timestamp_ms,
            stable_seq: durable.stable.seq,
            installed_view: durable.installed_view,
            new_view: durable
                .new_view
                .as_ref()
                .map(|nv| (nv.message.view, nv.signature.clone())),
            accepted: durable.accepted.clone(),
            prepared: durable
                .prepared
                .iter()
                .map(|(s, p)| {
                    (
                        *s,
                        (p.pre_prepare.message.view, p.pre_prepare.message.digest),
                    )
                })
                .collect(),
            committed: durable.committed.keys().copied().collect(),
        };
        Ok((store, durable))
    }

    /// The keys of everything on disk, forgotten here: for the write of a block that ends
    /// the epoch (docs/adr/0011), after which the next replica set starts with nothing of
    /// this one's (its views, accepted, prepared and committed batches).
    pub fn forget_epoch(&mut self) -> Vec<Vec<u8>> {
        let mut keys: Vec<Vec<u8>> = [VIEW, LAST_TIMESTAMP, STABLE, INSTALLED_VIEW, NEW_VIEW]
            .iter()
            .map(|k| k.to_vec())
            .collect();
        keys.extend(self.accepted.keys().map(|s| key(ACCEPTED, *s)));
        keys.extend(self.prepared.keys().map(|s| key(PREPARED, *s)));
        keys.extend(self.committed.iter().map(|s| committed_key(*s)));
        *self = PbftStore::default();
        keys
    }

    /// Writes what changed since the last save, synced.
    pub fn save(
        &mut self,
        ledger: &Ledger,
        durable: &pbft::DurableState,
    ) -> Result<(), LedgerError> {
        let mut puts = Vec::new();
        let mut deletes = Vec::new();
        if durable.view != self.view {
            puts.push((VIEW.to_vec(), durable.view.to_be_bytes().to_vec()));
            self.view = durable.view;
        }
        if durable.last_timestamp_ms != self.last_timestamp_ms {
            puts.push((
                LAST_TIMESTAMP.to_vec(),
                durable.last_timestamp_ms.to_be_bytes().to_vec(),
            ));
            self.last_timestamp_ms = durable.last_timestamp_ms;
        }
        if durable.stable.seq != self.stable_seq {
            puts.push((
                STABLE.to_vec(),
                wire::checkpoint_proof_to_proto(&durable.stable).encode_to_vec(),
            ));
            self.stable_seq = durable.stable.seq;
        }
        if durable.installed_view != self.installed_view {
            if let Some(view) = durable.installed_view {
                puts.push((INSTALLED_VIEW.to_vec(), view.to_be_bytes().to_vec()));
            } else {
                deletes.push(INSTALLED_VIEW.to_vec());
            }
            self.installed_view = durable.installed_view;
        }
        let new_view = durable
            .new_view
            .as_ref()
            .map(|nv| (nv.message.view, nv.signature.clone()));
        if new_view != self.new_view {
            if let Some(nv) = &durable.new_view {
                let message = pbft::Message::NewView(nv.clone());
                puts.push((NEW_VIEW.to_vec(), wire::to_proto(&message).encode_to_vec()));
            } else {
                deletes.push(NEW_VIEW.to_vec());
            }
            self.new_view = new_view;
        }
        for (seq, entry) in &durable.accepted {
            if self.accepted.get(seq) != Some(entry) {
                let mut v = entry.0.to_be_bytes().to_vec();
                v.extend_from_slice(&entry.1);
                puts.push((key(ACCEPTED, *seq), v));
                self.accepted.insert(*seq, *entry);
            }
        }
        let gone: Vec<_> = self
            .accepted
            .keys()
            .filter(|s| !durable.accepted.contains_key(s))
            .copied()
            .collect();
        for seq in gone {
            deletes.push(key(ACCEPTED, seq));
            self.accepted.remove(&seq);
        }
        for (seq, proof) in &durable.prepared {
            let summary = (
                proof.pre_prepare.message.view,
                proof.pre_prepare.message.digest,
            );
            if self.prepared.get(seq) != Some(&summary) {
                puts.push((
                    key(PREPARED, *seq),
                    wire::prepared_to_proto(proof).encode_to_vec(),
                ));
                self.prepared.insert(*seq, summary);
            }
        }
        let gone: Vec<_> = self
            .prepared
            .keys()
            .filter(|s| !durable.prepared.contains_key(s))
            .copied()
            .collect();
        for seq in gone {
            deletes.push(key(PREPARED, seq));
            self.prepared.remove(&seq);
        }
        let height = ledger.height();
        for (seq, batch) in durable.committed.range(height + 1..) {
            if self.committed.insert(*seq) {
                puts.push((
                    committed_key(*seq),
                    wire::committed_to_proto(batch).encode_to_vec(),
                ));
            }
        }
        // Executed batches were deleted with their block.
        self.committed = self.committed.split_off(&(height + 1));
        if puts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        ledger.write_pbft(puts, deletes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genesis::Genesis;

    /// A ledger of the fixture network (fuzz/fixtures) in a fresh directory.
    fn ledger() -> (tempfile::TempDir, Ledger) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/genesis.pb");
        let block = v1::Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
        let genesis = Genesis::from_block(block).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), &genesis).unwrap();
        (dir, ledger)
    }

    /// Red team, third round (issue 18): the view installed and the primary's new view are
    /// written and read back; a new view that does not decode is dropped (it is optional);
    /// an installed view that does not decode stops the load, naming its key.
    #[test]
    fn the_installed_view_and_the_new_view_survive_a_restart() {
        let (_dir, ledger) = ledger();
        let (mut store, mut durable) = PbftStore::load(&ledger).unwrap();
        assert_eq!(durable.installed_view, None);
        durable.view = 5;
        durable.installed_view = Some(5);
        durable.new_view = Some(pbft::Signed {
            from: 1,
            message: pbft::NewView {
                view: 5,
                view_changes: Vec::new(),
                pre_prepares: Vec::new(),
            },
            signature: vec![7; 64],
        });
        store.save(&ledger, &durable).unwrap();
        let (mut store, loaded) = PbftStore::load(&ledger).unwrap();
        assert_eq!(loaded.installed_view, Some(5));
        assert_eq!(loaded.new_view, durable.new_view);
        durable.new_view = None;
        store.save(&ledger, &durable).unwrap();
        assert_eq!(PbftStore::load(&ledger).unwrap().1.new_view, None);

        ledger
            .write_pbft(vec![(NEW_VIEW.to_vec(), vec![0xff, 0x01])], Vec::new())
            .unwrap();
        let (_, loaded) = PbftStore::load(&ledger).unwrap();
        assert_eq!(loaded.new_view, None);
        assert_eq!(loaded.installed_view, Some(5));

        ledger
            .write_pbft(vec![(INSTALLED_VIEW.to_vec(), vec![1])], Vec::new())
            .unwrap();
        let error = PbftStore::load(&ledger).err().unwrap().to_string();
        assert!(error.contains("installed_view"), "{error}");
    }
}
