//! Joining (docs/adr/0011 §6): a peer that is not one of the replicas of the configuration in
//! force on its own ledger — a peer the admins are adding, or one back after the peers
//! changed while it was away — fetches the blocks it lacks from other peers and checks each
//! before it executes it: its commit certificate against the replicas of its epoch
//! ([`check_block_certificate`]), then its header against the one re-execution gives. It
//! stops at the block whose configuration names it; its replica then catches up within the
//! epoch by state transfer (adr 0006).
//!
//! Who can lie here: the peer a block comes from. A block that does not check is refused and
//! the next source asked, so a lying source can only be slow; nothing it sends is executed
//! unless a quorum of the epoch's replicas certified it. That is not enough on its own: the
//! keys of a replica set whose epoch ended (peers since removed, their keys kept by whoever
//! ran them) could certify a fork of their epoch, with a configuration of their choosing that
//! names this peer. So before it takes part, the block it reached must be the very one a
//! peer its operator named (`--join`) holds ([`confirm_head`]).

use std::sync::Arc;
use std::time::Duration;

use medledger_crypto::VerifyingKey;
use medledger_execution::block::header_hash;
use medledger_execution::certified::{batch_of, check_block_certificate};
use medledger_execution::config::EpochBase;
use medledger_execution::execute::{CertifiedBatch, execute_block};
use medledger_proto::v1;
use medledger_proto::v1::ledger_client::LedgerClient;

use crate::execute::{LedgerState, Revocations};
use crate::ledger::Ledger;
use crate::validate::Validator;

/// A peer its operator named with `--join`: `NAME@HOST:PORT`, the peer enrolled as NAME
/// answering at that address (the CA vouches for who confirms the head a joiner reached),
/// or `HOST:PORT`, whichever enrolled peer answers there (trusted on the address alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinPeer {
    /// The enrolled name the peer's certificate must carry, if the operator gave one.
    pub name: Option<String>,
    /// `HOST:PORT`.
    pub address: String,
}

/// Longest `HOST:PORT` taken (a DNS name is at most 253 bytes).
const MAX_ADDRESS_LEN: usize = 260;

impl std::str::FromStr for JoinPeer {
    type Err = String;

    /// Parses `NAME@HOST:PORT` or `HOST:PORT`. A name may itself hold `@`: the last one
    /// separates it from the address.
    ///
    /// # Errors
    /// Words naming what is wrong: an invalid name (`validate_name`), an address without a
    /// port, or one too long or holding spaces or control characters.
    fn from_str(text: &str) -> Result<JoinPeer, String> {
        // Quoted, and cut short: the operator's text goes into logs.
        let shown: String = text.chars().take(MAX_ADDRESS_LEN + 80).collect();
        let (name, address) = match text.rsplit_once('@') {
            Some((name, address)) => {
                medledger_crypto::validate_name(name)
                    .map_err(|e| format!("--join {shown:?}: {e}"))?;
                (Some(name.to_owned()), address)
            }
            None => (None, text),
        };
        if !dialable(address) {
            return Err(format!(
                "--join {shown:?}: expected NAME@HOST:PORT or HOST:PORT: a DNS name, an IPv4 \
                 address or a bracketed IPv6 address ([::1]), and a port from 1 to 65535"
            ));
        }
        Ok(JoinPeer {
            name,
            address: address.to_owned(),
        })
    }
}

/// Whether `address` is `HOST:PORT` as a peer is dialed: HOST a DNS name or IPv4 address
/// (letters, digits, `.`, `-`, `_`) or a bracketed IPv6 address, PORT 1 to 65535, nothing
/// else (no path, query or user part that would change what is dialed).
fn dialable(address: &str) -> bool {
    if address.len() > MAX_ADDRESS_LEN {
        return false;
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    let port_fine = !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p != 0);
    let host_fine = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        }
    };
    port_fine && host_fine
}

impl std::fmt::Display for JoinPeer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(name) => write!(f, "{name}@{}", self.address),
            None => f.write_str(&self.address),
        }
    }
}

/// Blocks asked for per call (a peer answers at most its own limit).
const BLOCKS_PER_CALL: u32 = 100;
/// Largest answer taken from a source (a peer sends at most 8 MiB and one block more).
pub(crate) const MAX_ANSWER_BYTES: usize = 64 << 20;
/// How long to wait before asking every source again when none had a block more.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How often a peer still waiting for a named peer to confirm its head says so again.
const WAITING_SAID_EVERY: Duration = Duration::from_secs(60);
/// How long one source may take to connect or to answer one call: a source that stalls is
/// passed over.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of the `Ledger` service of the peer at `source`, dialed with `tls` (checking
/// `revoked`) within [`CALL_TIMEOUT`], taking answers of up to [`MAX_ANSWER_BYTES`].
///
/// # Errors
/// The peer could not be reached in time (the words say why).
pub(crate) async fn ledger_client(
    source: &str,
    tls: Arc<rustls::ClientConfig>,
    revoked: medledger_tls::SharedRevocations,
) -> Result<LedgerClient<tonic::transport::Channel>, String> {
    let connect = medledger_tls::connect(source, tls, revoked);
    let channel = tokio::time::timeout(CALL_TIMEOUT, connect)
        .await
        .map_err(|_| "connecting took too long".to_string())?
        .map_err(|e| e.to_string())?;
    Ok(LedgerClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES))
}

/// Why a fetched block was refused (the source is passed over).
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("block {got} where block {expected} comes next")]
    OutOfOrder { expected: u64, got: u64 },
    #[error("block {0}: {1}")]
    Refused(u64, String),
    #[error("this peer's ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
    #[error("this peer's state: {0}")]
    State(#[from] medledger_execution::state::StateError),
    #[error(
        "no peer named with --join ({named}) is a peer of the configuration in force at block \
         {height}, whose peers are {in_force}: none of them could confirm the block reached. \
         Start this peer again with --join NAME@HOST:PORT naming one of those"
    )]
    NoneNamedInForce {
        named: String,
        height: u64,
        in_force: String,
    },
    #[error(
        "{peer} holds another block {number} than the one this peer reached: the blocks \
         fetched are a fork (certified by the keys of an ended epoch?). This peer's ledger is \
         not to be used; start it again with an empty data directory and --join peers you trust"
    )]
    Fork { peer: String, number: u64 },
}

/// The peers named with `--join` that may confirm a joiner's head: those whose name is one
/// of `in_force` (the names of the configuration in force at `height`, the block reached),
/// and every one given by address alone (whoever answers there is checked at the call).
/// Returns them and the names left out (removed or misspelled: their certificates are
/// revoked or none exists, so waiting for them would be waiting for ever).
///
/// # Errors
/// [`JoinError::NoneNamedInForce`]: peers were named, and none of them is in force.
pub fn named_in_force<'a>(
    join: &'a [JoinPeer],
    in_force: &[&str],
    height: u64,
) -> Result<(Vec<&'a JoinPeer>, Vec<&'a str>), JoinError> {
    let (kept, left): (Vec<&JoinPeer>, Vec<&JoinPeer>) = join
        .iter()
        .partition(|peer| peer.name.as_deref().is_none_or(|n| in_force.contains(&n)));
    if kept.is_empty() && !left.is_empty() {
        return Err(JoinError::NoneNamedInForce {
            named: left
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
            height,
            in_force: in_force.join(", "),
        });
    }
    let left = left
        .iter()
        .filter_map(|peer| peer.name.as_deref())
        .collect();
    Ok((kept, left))
}

/// The epoch in force on `ledger`: where the last change of the peers left it.
pub fn epoch_base(ledger: &Ledger) -> Result<EpochBase, crate::ledger::LedgerError> {
    Ok(match ledger.epoch_base()? {
        0 => EpochBase::default(),
        number => EpochBase::after(&ledger.header(number)?),
    })
}

/// Checks `block`, the next one for `ledger`, and commits it if it holds: its commit
/// certificate is a quorum of the replicas of its epoch, and executing its batch here gives
/// the very header it carries. Returns whether it changed the peers.
///
/// # Errors
/// [`JoinError`]: refused (nothing written), or this peer's own storage failed.
pub fn apply_block(
    ledger: &Ledger,
    validator: &Validator,
    revocations: &Revocations,
    block: &v1::Block,
) -> Result<bool, JoinError> {
    let expected = ledger.height().saturating_add(1);
    let header = block
        .header
        .as_ref()
        .ok_or_else(|| JoinError::Refused(expected, "no header".into()))?;
    if header.number != expected {
        return Err(JoinError::OutOfOrder {
            expected,
            got: header.number,
        });
    }
    let refused = |why: String| JoinError::Refused(expected, why);
    let state = LedgerState::new(ledger, revocations);
    let configuration = validator.configuration_in_force(&state)?;
    let batch = batch_of(block).map_err(refused)?;
    let commits = check_block_certificate(
        &configuration,
        epoch_base(ledger)?,
        expected,
        &batch,
        block.certificate.as_ref(),
    )
    .map_err(refused)?;
    let commit = execute_block(
        &state,
        validator,
        &CertifiedBatch {
            seq: expected,
            batch: &batch,
            commits: &commits,
        },
    )?;
    drop(state);
    let ours = commit.block.header.as_ref().map(header_hash);
    if ours != Some(header_hash(header)) {
        return Err(refused(
            "executing its batch here gives another header: the block was altered".into(),
        ));
    }
    // A joiner holds no private values of what it fetched (reconciliation, ADR 0017 §7).
    ledger.commit_block(&commit, &[], &[], &[])?;
    revocations.apply(&commit.revocations);
    Ok(commit.ends_epoch)
}

/// Fetches and applies blocks until the configuration in force names `key`, asking
/// `sources` in turn (then again, every second, while none has a block more: the change that
/// adds this peer may not be committed yet). `tls` dials any enrolled peer.
///
/// # Errors
/// Only this peer's own storage failing; sources that fail or lie are passed over.
pub async fn catch_up(
    ledger: &Ledger,
    validator: &Validator,
    revocations: &Revocations,
    key: &VerifyingKey,
    sources: &[String],
    tls: Arc<rustls::ClientConfig>,
    revoked: medledger_tls::SharedRevocations,
) -> Result<(), JoinError> {
    let member = || -> Result<bool, JoinError> {
        let configuration =
            validator.configuration_in_force(&LedgerState::new(ledger, revocations))?;
        Ok(configuration.peer_keys.contains(key))
    };
    let mut said_waiting = false;
    while !member()? {
        let mut progressed = false;
        for source in sources {
            let Ok(mut client) = ledger_client(source, tls.clone(), revoked.clone()).await else {
                tracing::debug!(%source, "cannot reach a peer to catch up from");
                continue;
            };
            loop {
                let from = ledger.height().saturating_add(1);
                let call = client.get_blocks(v1::GetBlocksRequest {
                    from,
                    limit: BLOCKS_PER_CALL,
                });
                let blocks = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                    Ok(Ok(a)) => a.into_inner().blocks,
                    Ok(Err(status)) => {
                        tracing::debug!(%source, %status, "a peer did not serve blocks");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(%source, "a peer did not answer in time; asking another");
                        break;
                    }
                };
                if blocks.is_empty() {
                    break;
                }
                let mut refused = false;
                for block in &blocks {
                    match apply_block(ledger, validator, revocations, block) {
                        Ok(_) => progressed = true,
                        Err(e @ (JoinError::Ledger(_) | JoinError::State(_))) => return Err(e),
                        Err(e) => {
                            tracing::warn!(%source, error = %e, "a block fetched was refused");
                            refused = true;
                            break;
                        }
                    }
                    if member()? {
                        break;
                    }
                }
                if refused || member()? {
                    break;
                }
            }
            if member()? {
                break;
            }
        }
        if !progressed && !member()? {
            if !said_waiting {
                said_waiting = true;
                tracing::info!(
                    height = ledger.height(),
                    "caught up with the peers reached; this peer is not one of the replicas \
                     yet: waiting for the configuration that adds it"
                );
            }
            tokio::time::sleep(IDLE_WAIT).await;
        }
    }
    Ok(())
}

/// The file in a peer's data directory while it joins: written before it catches up,
/// removed once a named peer confirmed the block it reached. A peer started with it present
/// confirms its head before it takes part, even if it already is one of the replicas (it
/// was stopped between the two).
pub const UNCONFIRMED_JOIN: &str = "JOIN-UNCONFIRMED";

/// Waits until one of `named` (the peers the operator gave with `--join`, each dialed with
/// its own TLS configuration: one that accepts only the peer enrolled under its name, when
/// it has one) confirms this peer's head: it holds the same header at this peer's height
/// (`Ok`). A named peer behind this one is compared at its own height: the same header
/// there (the headers chain, so the whole prefix is the same) means waiting for it to catch
/// up; another header anywhere means the blocks this peer fetched are a fork (`Err`),
/// however long the fork is. Asked again every second while none confirms; a peer that
/// answers at a named address with another name's certificate is unreachable to this call.
///
/// # Errors
/// [`JoinError::Fork`]: a named peer holds another block at a height both have; `Ledger`:
/// this peer's own storage failed.
pub async fn confirm_head(
    ledger: &Ledger,
    named: &[(JoinPeer, Arc<rustls::ClientConfig>)],
    revoked: medledger_tls::SharedRevocations,
) -> Result<(), JoinError> {
    let ours = ledger.height();
    let mut last_said: Option<std::time::Instant> = None;
    loop {
        // What each named peer answered this round, for the operator while none confirms.
        let mut answers = Vec::with_capacity(named.len());
        for (peer, tls) in named {
            let source = peer.to_string();
            let mut client = match ledger_client(&peer.address, tls.clone(), revoked.clone()).await
            {
                Ok(client) => client,
                Err(e) => {
                    answers.push(format!("{source}: unreachable ({e})"));
                    continue;
                }
            };
            let status = client.get_status(v1::GetStatusRequest {});
            let status = match tokio::time::timeout(CALL_TIMEOUT, status).await {
                Ok(Ok(status)) => status.into_inner(),
                Ok(Err(e)) => {
                    answers.push(format!("{source}: status refused ({})", e.message()));
                    continue;
                }
                Err(_) => {
                    answers.push(format!("{source}: no status within {CALL_TIMEOUT:?}"));
                    continue;
                }
            };
            let at = ours.min(status.height);
            let call = client.get_block(v1::GetBlockRequest { number: at });
            let block = match tokio::time::timeout(CALL_TIMEOUT, call).await {
                Ok(Ok(block)) => block.into_inner(),
                Ok(Err(e)) => {
                    answers.push(format!("{source}: block {at} refused ({})", e.message()));
                    continue;
                }
                Err(_) => {
                    answers.push(format!("{source}: no block {at} within {CALL_TIMEOUT:?}"));
                    continue;
                }
            };
            let Some(theirs) = block.header.as_ref().map(header_hash) else {
                answers.push(format!("{source}: block {at} without a header"));
                continue;
            };
            if theirs != header_hash(&ledger.header(at)?) {
                return Err(JoinError::Fork {
                    peer: source,
                    number: at,
                });
            }
            if at == ours {
                tracing::info!(%source, block = ours, "a peer named to join through holds the block reached");
                return Ok(());
            }
            answers.push(format!("{source}: at block {at}, behind"));
        }
        if last_said.is_none_or(|t| t.elapsed() >= WAITING_SAID_EVERY) {
            last_said = Some(std::time::Instant::now());
            tracing::warn!(
                block = ours,
                answers = %answers.join("; "),
                "waiting for a peer named with --join to hold the block reached (this peer \
                 takes no part until one does)"
            );
        }
        tokio::time::sleep(IDLE_WAIT).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use medledger_crypto::{SignatureDomain, SigningIdentity};
    use medledger_pbft as pbft;
    use medledger_pbft::Signable as _;
    use prost::Message as _;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../fuzz/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    /// A fresh ledger of the fixture network, its validator and revocations.
    fn node(genesis: &Arc<crate::genesis::Genesis>) -> (tempfile::TempDir, Ledger, Validator) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path(), genesis).unwrap();
        (dir, ledger, Validator::new(genesis.clone()))
    }

    /// Block 1 of the fixture network, an empty batch, certified by `signers`.
    fn block_one(
        genesis: &Arc<crate::genesis::Genesis>,
        ledger: &Ledger,
        validator: &Validator,
        signers: &[u32],
    ) -> v1::Block {
        let revocations = Revocations::load(ledger).unwrap();
        let state = LedgerState::new(ledger, &revocations);
        let time_s: u64 = String::from_utf8(fixture("time"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let batch = pbft::Batch {
            timestamp_ms: time_s * 1000,
            requests: Vec::new(),
        };
        let vote = pbft::Vote {
            view: 0,
            seq: 1,
            digest: batch.digest(),
        };
        let replicas = genesis
            .configuration
            .replica_config(EpochBase::default())
            .unwrap();
        let bytes = replicas.epoch_signed(pbft::CommitVote(&vote).signed_bytes());
        let commits: Vec<pbft::Signed<pbft::Vote>> = signers
            .iter()
            .map(|&r| {
                let key = String::from_utf8(fixture(&format!("peer{r}.key"))).unwrap();
                pbft::Signed {
                    from: r,
                    message: vote,
                    signature: SigningIdentity::from_pkcs8_pem(&key)
                        .unwrap()
                        .sign(SignatureDomain::Consensus, &bytes)
                        .to_bytes()
                        .to_vec(),
                }
            })
            .collect();
        execute_block(
            &state,
            validator,
            &CertifiedBatch {
                seq: 1,
                batch: &batch,
                commits: &commits,
            },
        )
        .unwrap()
        .block
    }

    /// `--join` takes `NAME@HOST:PORT` and `HOST:PORT` (a name may hold `@`), and refuses,
    /// in words, anything else.
    #[test]
    fn join_peers_not_in_force_are_left_out_and_none_in_force_is_an_error() {
        let join: Vec<JoinPeer> = ["peer1@127.0.0.1:7001", "peer9@127.0.0.1:7009"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let in_force = ["peer0", "peer1", "peer2", "peer3"];
        let (kept, left) = named_in_force(&join, &in_force, 12).unwrap();
        assert_eq!(kept, vec![&join[0]]);
        assert_eq!(left, vec!["peer9"]);
        // Removed (peer1 is no longer in force) or misspelled (peer9): an error, at once.
        let e = named_in_force(&join, &["peer0", "peer2", "peer3", "peer4"], 40).unwrap_err();
        let words = e.to_string();
        assert!(
            matches!(e, JoinError::NoneNamedInForce { height: 40, .. }),
            "{e}"
        );
        assert!(
            words.contains("peer1@127.0.0.1:7001, peer9@127.0.0.1:7009"),
            "{words}"
        );
        assert!(words.contains("peer0, peer2, peer3, peer4"), "{words}");
        // A peer given by address alone is kept: whoever answers there is checked then.
        let join: Vec<JoinPeer> = ["peer9@127.0.0.1:7009", "127.0.0.1:7001"]
            .iter()
            .map(|t| t.parse().unwrap())
            .collect();
        let (kept, left) = named_in_force(&join, &in_force, 12).unwrap();
        assert_eq!(kept, vec![&join[1]]);
        assert_eq!(left, vec!["peer9"]);
    }

    #[test]
    fn join_peers_are_parsed_with_or_without_a_name() {
        let named: JoinPeer = "peer0@10.0.0.1:7051".parse().unwrap();
        assert_eq!(named.name.as_deref(), Some("peer0"));
        assert_eq!(named.address, "10.0.0.1:7051");
        assert_eq!(named.to_string(), "peer0@10.0.0.1:7051");
        let at: JoinPeer = "peer0@stmarys@peer.stmarys.example:7061".parse().unwrap();
        assert_eq!(at.name.as_deref(), Some("peer0@stmarys"));
        assert_eq!(at.address, "peer.stmarys.example:7061");
        let bare: JoinPeer = "localhost:7051".parse().unwrap();
        assert_eq!(bare.name, None);
        let v6: JoinPeer = "peer0@[::1]:7051".parse().unwrap();
        assert_eq!(v6.address, "[::1]:7051");
        for wrong in [
            "",
            "@",
            "peer0@",
            "@10.0.0.1:7051",
            "10.0.0.1",
            ":7051",
            "10.0.0.1:0",
            "10.0.0.1:70510",
            "10.0.0.1:port",
            "-peer@10.0.0.1:7051",
            "peer 0@10.0.0.1:7051",
            "peer0@10.0.0.1 :7051",
            "peer0@host\n:7051",
            // Addresses that would not be dialed as written (red team of the pinning).
            "peer0@::1:7051",
            "peer0@[::1:7051",
            "peer0@[not-v6]:7051",
            "peer0@peer.example/x:7051",
            "peer0@peer.example?a:7051",
            "peer0@user:pw@peer.example:7051",
            "peer0@peer.example:+7051",
        ] {
            let refused = wrong.parse::<JoinPeer>().unwrap_err();
            assert!(refused.starts_with("--join "), "{wrong:?}: {refused}");
        }
        let long = format!("{}:7051", "h".repeat(MAX_ADDRESS_LEN));
        assert!(long.parse::<JoinPeer>().is_err());
    }

    /// Who confirms a joiner's head when the operator named it: only the peer enrolled under
    /// that name; another enrolled peer answering at the address (a retired peer that kept
    /// its certificate) is refused at the handshake.
    #[test]
    fn a_named_join_peer_is_believed_only_under_its_name() {
        use rustls::client::danger::ServerCertVerifier as _;
        let genesis = crate::genesis::Genesis::from_block(
            v1::Block::decode(fixture("genesis.pb").as_slice()).unwrap(),
        )
        .unwrap();
        let time_s: u64 = String::from_utf8(fixture("time"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let now = rustls::pki_types::UnixTime::since_unix_epoch(Duration::from_secs(time_s));
        let server = rustls::pki_types::ServerName::try_from("peer").unwrap();
        let verifier = |name: &str| {
            medledger_tls::EnrollmentServerVerifier::for_peer_named(
                name,
                genesis.root.clone(),
                medledger_tls::SharedRevocations::default(),
                medledger_tls::provider(),
            )
        };
        let peer4 = rustls::pki_types::CertificateDer::from(fixture("peer4.der"));
        let peer5 = rustls::pki_types::CertificateDer::from(fixture("peer5.der"));
        let clinician = rustls::pki_types::CertificateDer::from(fixture("clinician.der"));
        assert!(
            verifier("peer4")
                .verify_server_cert(&peer4, &[], &server, &[], now)
                .is_ok()
        );
        for (name, cert) in [
            ("peer4", &peer5),
            ("peer5", &peer4),
            ("clinician", &clinician),
        ] {
            assert!(
                verifier(name)
                    .verify_server_cert(cert, &[], &server, &[], now)
                    .is_err(),
                "{name}"
            );
        }
    }

    /// Who can lie to a joining peer: its source. A block whose certificate is short of a
    /// quorum, whose header was altered, or that is not the next one is refused and nothing
    /// is written; the true block is taken.
    #[test]
    fn a_joining_peer_takes_only_certified_unaltered_blocks_in_order() {
        let block = crate::genesis::Genesis::from_block(
            v1::Block::decode(fixture("genesis.pb").as_slice()).unwrap(),
        )
        .unwrap();
        let genesis = Arc::new(block);
        let (_source_dir, source, source_validator) = node(&genesis);
        let good = block_one(&genesis, &source, &source_validator, &[0, 1, 2]);
        let short = block_one(&genesis, &source, &source_validator, &[0, 1]);
        let mut altered = good.clone();
        if let Some(h) = altered.header.as_mut() {
            h.state_root[0] ^= 1;
        }
        let mut later = good.clone();
        if let Some(h) = later.header.as_mut() {
            h.number = 2;
        }

        let (_dir, ledger, validator) = node(&genesis);
        let revocations = Revocations::load(&ledger).unwrap();
        for (what, block) in [("short of a quorum", &short), ("altered", &altered)] {
            let refused = apply_block(&ledger, &validator, &revocations, block);
            assert!(
                matches!(refused, Err(JoinError::Refused(1, _))),
                "a block {what}: {refused:?}"
            );
            assert_eq!(ledger.height(), 0, "a block {what}: nothing written");
        }
        assert!(matches!(
            apply_block(&ledger, &validator, &revocations, &later),
            Err(JoinError::OutOfOrder {
                expected: 1,
                got: 2
            })
        ));
        assert!(!apply_block(&ledger, &validator, &revocations, &good).unwrap());
        assert_eq!(ledger.height(), 1);
    }
}
