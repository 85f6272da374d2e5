//! The peer's side of block execution: the committed RocksDB ledger as the
//! [`WorldState`] that `medledger_execution::execute` reads, the revocations in force, and
//! the facts checks at submission read. Execution itself (validation, the chaincode, the
//! block) is in `medledger-execution`, shared with the auditor.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use medledger_execution::config::{Configuration, EpochBase};
use medledger_execution::state::{HistoryEntry, StateError, TxLocation, WorldState};
use medledger_pbft as pbft;
use medledger_proto::v1;
use medledger_tls::SharedRevocations;

use crate::ledger::{Ledger, LedgerError, StateView};
use crate::validate::LedgerFacts;

/// The revocations on the committed ledger: one shared set of serials, read by execution,
/// by checks at submission and by every TLS handshake, and changed only by the driver after
/// a block with revocations is on disk.
#[derive(Debug, Default)]
pub struct Revocations {
    pub serials: SharedRevocations,
    /// The CA sequence number of the last revocation on the ledger.
    pub sequence: AtomicU64,
}

impl Revocations {
    pub fn load(ledger: &Ledger) -> Result<Revocations, LedgerError> {
        let serials = SharedRevocations::default();
        for serial in ledger.revoked_serials()? {
            serials.insert(serial);
        }
        Ok(Revocations {
            serials,
            sequence: AtomicU64::new(ledger.revocation_sequence()?),
        })
    }

    /// Takes in the revocations a committed block made.
    pub fn apply(&self, committed: &[(Vec<u8>, u64)]) {
        for (serial, sequence) in committed {
            self.serials.insert(serial.clone());
            self.sequence.store(*sequence, Ordering::SeqCst);
        }
    }
}

/// The configuration in force at the committed head (docs/adr/0010), and where the epoch
/// of its replicas started (docs/adr/0011): read by checks at submission, by status and by
/// the links between peers; changed only by the driver after a block that changes it is on
/// disk. (Execution reads the configuration from the state it executes on, never from here.)
#[derive(Debug)]
pub struct ConfigurationInForce {
    current: RwLock<(Arc<Configuration>, EpochBase)>,
    /// The base of the epoch in force, sent on at each change of the peers.
    epochs: tokio::sync::watch::Sender<u64>,
}

impl ConfigurationInForce {
    pub fn new(configuration: Arc<Configuration>, base: EpochBase) -> ConfigurationInForce {
        ConfigurationInForce {
            current: RwLock::new((configuration, base)),
            epochs: tokio::sync::watch::Sender::new(base.seq),
        }
    }

    /// Follows the changes of the peers: the base of each epoch as it starts.
    pub fn epochs(&self) -> tokio::sync::watch::Receiver<u64> {
        self.epochs.subscribe()
    }

    pub fn get(&self) -> Arc<Configuration> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone()
    }

    /// The configuration in force and its epoch's base, read together.
    pub fn epoch(&self) -> (Arc<Configuration>, EpochBase) {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts `configuration` in force; `new_epoch`: it changed the replicas, whose epoch
    /// starts there.
    pub fn set(&self, configuration: Arc<Configuration>, new_epoch: Option<EpochBase>) {
        {
            let mut slot = self.current.write().unwrap_or_else(|p| p.into_inner());
            let base = new_epoch.unwrap_or(slot.1);
            *slot = (configuration, base);
        }
        if let Some(base) = new_epoch {
            self.epochs.send_replace(base.seq);
        }
    }

    /// The replica id of the peer whose signing key is `key` in the configuration in force.
    pub fn replica_of(&self, key: &medledger_crypto::VerifyingKey) -> Option<pbft::ReplicaId> {
        self.get().replica_of(key)
    }
}

/// The replica sets of `ledger`'s history before the one in force (docs/adr/0011), oldest
/// first: the first block each ordered and its configuration (the genesis's from block 1).
/// Read from the configuration links, one block per change of the configuration, so that a
/// block's votes are judged by its own epoch's replicas however old it is, after a restart
/// too (`Votes::remember_epochs`).
///
/// # Errors
/// The ledger cannot be read, or a configuration link does not lead to a configuration
/// update it stored, or the links do not end with the epoch in force
/// ([`Ledger::epoch_base`]) (corruption).
pub fn earlier_epochs(
    ledger: &Ledger,
    genesis: &crate::genesis::Genesis,
) -> Result<Vec<(u64, Arc<Configuration>)>, LedgerError> {
    use prost::Message as _;
    let broken = |why: String| crate::ledger::corrupt("configuration links", why);
    let mut epochs = vec![(1, Arc::new(genesis.configuration.clone()))];
    for sequence in 1.. {
        let Some(hash) = ledger.config_link(sequence)? else {
            break;
        };
        let location = ledger.envelope_location(&hash)?.ok_or_else(|| {
            broken(format!(
                "configuration {sequence}'s envelope is not indexed"
            ))
        })?;
        let block = ledger.located(location)?;
        let update = block
            .envelopes
            .get(location.index as usize)
            .and_then(|bytes| v1::Envelope::decode(bytes.as_slice()).ok())
            .and_then(|envelope| match envelope.kind {
                Some(v1::envelope::Kind::ConfigUpdate(update)) => update.config,
                _ => None,
            })
            .ok_or_else(|| broken(format!("configuration {sequence} is not in its block")))?;
        let configuration = genesis
            .configuration
            .stored(&update, &genesis.root)
            .map_err(|e| broken(format!("configuration {sequence}: {e}")))?;
        let changes_replicas = epochs
            .last()
            .is_some_and(|(_, last)| !last.same_replicas(&configuration));
        if changes_replicas {
            epochs.push((location.block.saturating_add(1), Arc::new(configuration)));
        }
    }
    // The last is the one in force: it must be the one the ledger began after its epoch
    // base (a link lost at the end would leave an ended epoch taken for the one in force,
    // and its blocks' votes judged by the wrong replicas).
    let base = ledger.epoch_base()?;
    let from = epochs.last().map_or(1, |(from, _)| *from);
    if from != base.saturating_add(1) {
        return Err(broken(format!(
            "the links end with an epoch from block {from}, but the epoch in force began \
             after block {base}"
        )));
    }
    epochs.pop();
    Ok(epochs)
}

/// A storage error counts as used: refusing is the safe side, and the next read of a failing
/// disk stops the peer anyway.
fn indexed(ledger: &Ledger, tx_id: &[u8; 32]) -> bool {
    ledger.tx_location(tx_id).map_or(true, |l| l.is_some())
}

/// The facts of the committed ledger alone (for checks at submission).
pub struct CommittedFacts<'a> {
    pub ledger: &'a Ledger,
    pub revocations: &'a Revocations,
    /// The configuration in force at the committed head.
    pub configuration: Arc<Configuration>,
}

impl LedgerFacts for CommittedFacts<'_> {
    fn certificate(&self, hash: &[u8; 32]) -> Option<Vec<u8>> {
        self.ledger.certificate(hash).ok().flatten()
    }
    fn tx_id_used(&self, tx_id: &[u8; 32]) -> bool {
        indexed(self.ledger, tx_id)
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revocations.serials.contains(serial)
    }
    fn revocation_sequence(&self) -> u64 {
        self.revocations.sequence.load(Ordering::SeqCst)
    }
    fn configuration(&self) -> &Configuration {
        &self.configuration
    }
}

impl From<LedgerError> for StateError {
    fn from(e: LedgerError) -> StateError {
        StateError(e.to_string())
    }
}

/// The committed ledger at one height (a RocksDB snapshot) with the revocations in force:
/// what a block executes on, and what a query reads.
pub struct LedgerState<'a> {
    ledger: &'a Ledger,
    view: StateView<'a>,
    revocations: &'a Revocations,
}

impl<'a> LedgerState<'a> {
    pub fn new(ledger: &'a Ledger, revocations: &'a Revocations) -> LedgerState<'a> {
        LedgerState {
            ledger,
            view: StateView::new(ledger),
            revocations,
        }
    }

    /// The height this snapshot reflects.
    pub fn height(&self) -> Result<u64, LedgerError> {
        self.view.height()
    }
}

/// Queries read the private values this peer holds (docs/adr/0017 §5) from its `private`
/// column family: the latest, not the snapshot's (a value purged since is gone).
impl medledger_execution::stub::PrivateValues for LedgerState<'_> {
    fn salted_value(
        &self,
        commitment: &[u8; 32],
    ) -> Result<Option<medledger_execution::stub::SaltedValue>, StateError> {
        Ok(self
            .ledger
            .private_value(commitment)?
            .map(|salted| (salted.salt, salted.value)))
    }
}

impl WorldState for LedgerState<'_> {
    fn header(&self, number: u64) -> Result<v1::BlockHeader, StateError> {
        Ok(self.ledger.header(number)?)
    }
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.view.get(key)?)
    }
    fn scan(
        &self,
        prefix: &str,
        start: &str,
        end: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StateError> {
        Ok(self.view.scan(prefix, start, end, limit)?)
    }
    fn history(&self, key: &str, limit: usize) -> Result<Vec<HistoryEntry>, StateError> {
        Ok(self.view.history(key, limit)?)
    }
    fn certificate(&self, hash: &[u8; 32]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.ledger.certificate(hash)?)
    }
    fn tx_location(&self, tx_id: &[u8; 32]) -> Result<Option<TxLocation>, StateError> {
        Ok(self.ledger.tx_location(tx_id)?)
    }
    fn envelope_location(&self, hash: &[u8; 32]) -> Result<Option<TxLocation>, StateError> {
        Ok(self.ledger.envelope_location(hash)?)
    }
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.revocations.serials.contains(serial)
    }
    fn revocation_sequence(&self) -> u64 {
        self.revocations.sequence.load(Ordering::SeqCst)
    }
    fn configuration(&self) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.ledger.configuration()?)
    }
}
