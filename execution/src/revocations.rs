//! Taking in the CA's revocation records as peers serve them (`GetRevocations`, issue 17
//! item 5): a client asks every peer from the first sequence number it lacks and believes a
//! record only when the CA root signed it and it sits where its page says. A peer can
//! withhold records (the others serve them) but cannot forge, reorder or inflate them.

use std::collections::BTreeSet;

use medledger_crypto::{Signature, SignatureDomain, VerifyingKey};
use medledger_proto::v1;
use prost::Message;

/// Records a peer answers per page (`medledger-peer` serves at most this many); a larger
/// answer is dropped whole.
pub const REVOCATIONS_PER_PAGE: u64 = 256;

/// What [`RevocationLog::take_page`] took in from one page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenPage {
    /// The serials of the records new to the log (DER integer content bytes), in sequence
    /// order.
    pub serials: Vec<Vec<u8>>,
    /// Whether the page held only records the CA signed, each in its place (or already
    /// held): only then is the next page worth asking for. A page of junk is not, however
    /// full: a peer answering full pages of junk must not keep a client asking for ever.
    pub whole: bool,
}

/// The CA sequence numbers (1, 2, 3, ...) of the revocation records a client took in.
#[derive(Debug, Default, Clone)]
pub struct RevocationLog {
    /// Sequences taken in beyond the first gap.
    known: BTreeSet<u64>,
    /// Every sequence below this was taken in.
    first_unknown: u64,
}

impl RevocationLog {
    /// A log that holds no record yet.
    pub fn new() -> RevocationLog {
        RevocationLog {
            known: BTreeSet::new(),
            first_unknown: 1,
        }
    }

    /// The first CA sequence number (from 1) this log holds no record of: where to ask from.
    pub fn first_unknown(&self) -> u64 {
        self.first_unknown.max(1)
    }

    /// Whether sequence `sequence` was taken in.
    pub fn holds(&self, sequence: u64) -> bool {
        sequence < self.first_unknown() || self.known.contains(&sequence)
    }

    /// How many records were taken in.
    pub fn len(&self) -> u64 {
        (self.first_unknown() - 1).saturating_add(self.known.len() as u64)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Takes in one page a peer answered from sequence `from`: the records must be the
    /// consecutive sequences `from`, `from + 1`, ..., each signed by `ca` (the network's root,
    /// domain [`SignatureDomain::RevocationRecord`]). The page is read up to its first record
    /// that is unsigned, unreadable or out of place; a page longer than
    /// [`REVOCATIONS_PER_PAGE`] is not read at all.
    pub fn take_page(
        &mut self,
        ca: &VerifyingKey,
        from: u64,
        records: &[v1::SignedRevocationRecord],
    ) -> TakenPage {
        let mut taken = TakenPage {
            serials: Vec::new(),
            whole: false,
        };
        if records.len() as u64 > REVOCATIONS_PER_PAGE {
            return taken;
        }
        for (offset, signed) in records.iter().enumerate() {
            let Some(expected) = from.checked_add(offset as u64) else {
                return taken;
            };
            if self.holds(expected) {
                continue;
            }
            let Some(record) = checked_record(ca, signed) else {
                return taken;
            };
            if record.sequence != expected {
                return taken;
            }
            self.insert(expected);
            taken.serials.push(record.serial);
        }
        taken.whole = true;
        taken
    }

    fn insert(&mut self, sequence: u64) {
        self.known.insert(sequence);
        while self.known.remove(&self.first_unknown()) {
            self.first_unknown = self.first_unknown().saturating_add(1);
        }
    }
}

/// A revocation record, if `ca` signed it.
pub fn checked_record(
    ca: &VerifyingKey,
    signed: &v1::SignedRevocationRecord,
) -> Option<v1::RevocationRecord> {
    let signature = Signature::from_slice(&signed.signature).ok()?;
    ca.verify(
        SignatureDomain::RevocationRecord,
        &signed.record,
        &signature,
    )
    .ok()?;
    v1::RevocationRecord::decode(signed.record.as_slice()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_crypto::SigningIdentity;

    fn record(ca: &SigningIdentity, sequence: u64) -> v1::SignedRevocationRecord {
        let record = v1::RevocationRecord {
            sequence,
            serial: sequence.to_be_bytes().to_vec(),
            ..Default::default()
        }
        .encode_to_vec();
        v1::SignedRevocationRecord {
            signature: ca
                .sign(SignatureDomain::RevocationRecord, &record)
                .to_bytes()
                .to_vec(),
            record,
        }
    }

    fn ca() -> SigningIdentity {
        SigningIdentity::from_seed(&[7; 32])
    }

    #[test]
    fn pages_are_taken_in_order_and_gaps_are_asked_again() {
        let ca = ca();
        let key = ca.verifying_key();
        let mut log = RevocationLog::new();
        assert_eq!(log.first_unknown(), 1);
        let page: Vec<_> = (1..=3).map(|s| record(&ca, s)).collect();
        assert_eq!(log.take_page(&key, 1, &page).serials.len(), 3);
        assert_eq!(log.first_unknown(), 4);
        // A later page first (one peer ahead), then the gap: the first unknown waits.
        assert_eq!(log.take_page(&key, 6, &[record(&ca, 6)]).serials.len(), 1);
        assert_eq!(log.first_unknown(), 4);
        assert!(log.holds(6) && !log.holds(5));
        let taken = log.take_page(&key, 4, &[record(&ca, 4), record(&ca, 5), record(&ca, 6)]);
        assert!(taken.whole);
        let serials = taken.serials;
        assert_eq!(
            serials,
            vec![4u64.to_be_bytes().to_vec(), 5u64.to_be_bytes().to_vec()]
        );
        assert_eq!((log.first_unknown(), log.len()), (7, 6));
        // The same page again: nothing new, and nothing wrong with it.
        let again = log.take_page(&key, 1, &page);
        assert!(again.serials.is_empty() && again.whole);
    }

    #[test]
    fn a_forged_misplaced_or_oversized_page_is_not_believed() {
        let ca = ca();
        let key = ca.verifying_key();
        let mut log = RevocationLog::new();
        let stranger = SigningIdentity::from_seed(&[8; 32]);
        let nothing = TakenPage {
            serials: Vec::new(),
            whole: false,
        };
        // Signed by another key: nothing, and nothing after it.
        assert_eq!(
            log.take_page(&key, 1, &[record(&stranger, 1), record(&ca, 2)]),
            nothing
        );
        // A record where another belongs: the page ends there.
        assert_eq!(log.take_page(&key, 1, &[record(&ca, 2)]), nothing);
        let mut tampered = record(&ca, 1);
        tampered.record.push(0);
        assert_eq!(log.take_page(&key, 1, &[tampered]), nothing);
        assert_eq!(log.first_unknown(), 1);
        // More than a page: not read, even though every record is true.
        let long: Vec<_> = (1..=REVOCATIONS_PER_PAGE + 1)
            .map(|s| record(&ca, s))
            .collect();
        assert_eq!(log.take_page(&key, 1, &long), nothing);
        // A full page of junk is not whole: no reason to ask for the next one.
        let junk: Vec<_> = (1..=REVOCATIONS_PER_PAGE)
            .map(|_| v1::SignedRevocationRecord::default())
            .collect();
        assert_eq!(log.take_page(&key, 1, &junk), nothing);
        // A page from the top of the sequence space does not wrap around.
        let top = log.take_page(&key, u64::MAX, &[record(&ca, u64::MAX), record(&ca, 0)]);
        assert_eq!((top.serials.len(), top.whole), (1, false));
        assert_eq!(log.first_unknown(), 1);
    }
}
