//! A client of the peers: signed transactions, commit proofs, queries.
//!
//! The client trusts the CA root in its wallet and nothing else. It learns the network from
//! the first peer that answers with a genesis block naming the same root, pins that genesis
//! in the wallet (`genesis.block`), and from then on talks to every genesis peer with mutual
//! TLS, pinning each peer's genesis key; later connections need any one reachable peer that
//! serves the same genesis, so no single peer is the way in. A transaction's outcome is
//! believed only with its commit proof (ledger format 2, docs/adr/0009): its block's header
//! signed by f+1 genesis peers (so at least one correct one) and the Merkle path of the
//! result of the very envelope this client sent, checked here against the pinned genesis.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medledger_crypto::{SignatureDomain, certificate_hash};
use medledger_execution::block::envelope_hash;
use medledger_execution::chain::ConfigChain;
use medledger_execution::config::Configuration;
use medledger_execution::proof::{
    KnownConfigurations, ProofError, check_block, check_commit_proof,
};
use medledger_execution::revocations::{REVOCATIONS_PER_PAGE, RevocationLog};
use medledger_proto::v1;
use medledger_proto::v1::ledger_client::LedgerClient;
pub use medledger_tls::SharedRevocations;
use prost::Message;
use rand_core::RngCore;

use tonic::transport::Channel;

use crate::error::ClientError;
use crate::wallet::Wallet;
use medledger_execution::genesis::Genesis;

/// How old the followed configuration chain and revocations may be when a transaction is
/// signed.
pub const CONFIGURATION_MAX_AGE: Duration = Duration::from_secs(30);
/// Configuration links a peer answers per page (`medledger-peer`'s `CONFIG_LINKS_PER_PAGE`).
const CONFIG_LINKS_PER_PAGE: u64 = 64;

/// The configuration links `client` serves from sequence `from` (one page), within 3 s.
async fn config_links(
    mut client: LedgerClient<Channel>,
    from: u64,
) -> Result<Vec<v1::ConfigLink>, String> {
    let mut request = tonic::Request::new(v1::GetConfigChainRequest {
        from_sequence: from,
    });
    request.set_timeout(Duration::from_secs(3));
    // Bounded here too: a peer that accepted the connection but stopped answering does not
    // hold the client up.
    tokio::time::timeout(Duration::from_secs(3), client.get_config_chain(request))
        .await
        .map_err(|_| "no answer within 3 s".to_string())?
        .map(|r| r.into_inner().links)
        .map_err(|status| peer_words(status.message()))
}

/// Longest [`PeerSet::learn_revocations`] asks for: a peer answering slowly, page after page,
/// holds no client up for longer.
pub const LEARN_REVOCATIONS_DEADLINE: Duration = Duration::from_secs(10);

/// One page of the revocations `client` serves from sequence `from`, within 3 s; `None` when
/// it did not answer, or answered more than a page.
async fn revocation_page(
    mut client: LedgerClient<Channel>,
    from: u64,
) -> Option<Vec<v1::SignedRevocationRecord>> {
    let mut request = tonic::Request::new(v1::GetRevocationsRequest {
        from_sequence: from,
    });
    request.set_timeout(Duration::from_secs(3));
    let records = tokio::time::timeout(Duration::from_secs(3), client.get_revocations(request))
        .await
        .ok()?
        .ok()?
        .into_inner()
        .records;
    (records.len() as u64 <= REVOCATIONS_PER_PAGE).then_some(records)
}

/// Largest response accepted from a peer.
const MAX_RESPONSE_BYTES: usize = 32 << 20;

/// A transaction's outcome, as its checked commit proof shows it.
#[derive(Debug, Clone)]
pub struct Committed {
    pub tx_id: [u8; 32],
    pub block: u64,
    pub status: v1::TxStatus,
    /// Words for a refusal that f+1 peers gave alike (so a correct peer did); empty when
    /// they did not agree in time. Not part of the proof: the status and code are.
    pub message: String,
    /// For a refusal, its kind as a gRPC code (from the ledger).
    pub code: i32,
    pub result: Vec<u8>,
    /// The proof, as checked: anyone holding the genesis can check it again
    /// ([`PeerSet::check_proof`], `medledger_execution::proof::check_commit_proof`).
    pub proof: v1::CommitProof,
}

impl Committed {
    pub fn is_valid(&self) -> bool {
        self.status == v1::TxStatus::Valid
    }

    /// The commit if the transaction is valid, else why it was refused.
    pub fn into_valid(self) -> Result<Committed, ClientError> {
        if self.is_valid() {
            Ok(self)
        } else {
            Err(self.refusal())
        }
    }

    /// The peers whose votes the proof carries.
    pub fn attested_by(&self) -> Vec<u32> {
        self.proof.votes.iter().map(|v| v.replica).collect()
    }

    /// Why a committed transaction was refused, with the kind the ledger recorded.
    pub fn refusal(&self) -> ClientError {
        let code = match tonic::Code::from(self.code) {
            tonic::Code::Ok => tonic::Code::InvalidArgument,
            code => code,
        };
        // The proof speaks for the status and code; the words are what f+1 peers said of
        // it (a block records none).
        let mut why = format!(
            "{} ({})",
            self.status.as_str_name(),
            v1::ResultCode::try_from(self.code)
                .map(|c| c.as_str_name())
                .unwrap_or("RESULT_CODE_UNKNOWN")
        );
        if !self.message.is_empty() {
            why = format!("{why}: {}", self.message);
        }
        ClientError::from_ledger_status(tonic::Status::new(
            code,
            format!("refused in block {}: {why}", self.block),
        ))
    }
}

/// The links to the peers of the configuration a client follows, by replica id.
struct Links {
    /// The (signing key, address) each link was made for.
    members: Vec<([u8; 32], String)>,
    clients: Vec<LedgerClient<Channel>>,
    /// Each link's server certificate's notAfter at its latest connection (Unix seconds;
    /// `i64::MAX` until connected), and when the link was made.
    ends: Vec<(Arc<std::sync::atomic::AtomicI64>, std::time::Instant)>,
    names: Vec<String>,
    addresses: Vec<String>,
}

/// The TLS client configuration pinning the given peer keys, as this wallet.
type Dialer =
    dyn Fn(BTreeSet<[u8; 32]>) -> Result<Arc<rustls::ClientConfig>, ClientError> + Send + Sync;

pub struct PeerSet {
    /// Links to the peers of the configuration followed: replaced when a configuration
    /// changes the peers (docs/adr/0011), never edited in place.
    links: std::sync::RwLock<Arc<Links>>,
    /// Makes the link to a peer that joins.
    dialer: Box<Dialer>,
    /// The configuration chain followed from the pinned genesis (docs/adr/0010): what
    /// commit proofs are checked against. Links come from any peer and are each checked
    /// against the configuration before them, so no peer is believed.
    chain: std::sync::RwLock<ConfigChain>,
    /// When the chain and the revocations were last followed.
    chain_learned: std::sync::Mutex<Option<std::time::Instant>>,
    /// Serials the ledger revoked, from CA-signed records any peer may serve (a peer can
    /// withhold one, the others serve it; none can forge one): every TLS link of this client
    /// refuses and drops those certificates.
    revocations: SharedRevocations,
    /// The CA sequence numbers of the records taken in.
    revocation_log: std::sync::Mutex<RevocationLog>,
    /// The network's CA root, which signs revocation records.
    root: medledger_crypto::RootCertificate,
    pub network_id: [u8; 32],
    /// The wallet's certificate, presented in every handshake and named by every
    /// transaction: replaced when it is renewed ([`PeerSet::present`]).
    certificate: Arc<medledger_tls::LiveCertificate>,
    signing: medledger_crypto::SigningIdentity,
    /// The highest block this client knows committed: queries are answered from a state at
    /// least this high (0: not yet learned; learned from the peers at the first query).
    known_height: std::sync::atomic::AtomicU64,
}

/// A check of a query's answer the caller can make itself ([`PeerSet::query_until`]).
type AcceptAnswer<'a> = &'a (dyn Fn(&v1::QueryResponse) -> Result<(), String> + Sync);

/// Mutual TLS as this wallet, accepting servers of role peer under the wallet's root whose
/// certificates are not in `revoked` (and, with `pins`, only those Ed25519 keys).
pub fn client_tls(
    wallet: &Wallet,
    pins: Option<BTreeSet<[u8; 32]>>,
    revoked: &SharedRevocations,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    client_tls_for(medledger_crypto::Role::Peer, wallet, pins, revoked)
}

/// Mutual TLS as this wallet, accepting servers enrolled with `role` under the wallet's root
/// whose certificates are not in `revoked` ([`PeerSet::revocations`]: what the ledger
/// revoked).
pub fn client_tls_for(
    role: medledger_crypto::Role,
    wallet: &Wallet,
    pins: Option<BTreeSet<[u8; 32]>>,
    revoked: &SharedRevocations,
) -> Result<Arc<rustls::ClientConfig>, ClientError> {
    let provider = medledger_tls::provider();
    let verifier = medledger_tls::EnrollmentServerVerifier::for_role(
        role,
        wallet.root()?,
        revoked.clone(),
        pins,
        provider.clone(),
    );
    let config = medledger_tls::client_config(live_certificate(wallet)?, verifier, provider)
        .map_err(|e| ClientError::wallet(&wallet.dir, e))?;
    Ok(Arc::new(config))
}

/// The wallet's certificate and signing key, as presented in TLS handshakes.
///
/// # Errors
/// The certificate or key cannot be read, or they do not match.
pub fn live_certificate(
    wallet: &Wallet,
) -> Result<Arc<medledger_tls::LiveCertificate>, ClientError> {
    medledger_tls::LiveCertificate::new(
        wallet.cert_der()?,
        wallet.signing.to_pkcs8_der().to_vec(),
        medledger_tls::provider(),
    )
    .map_err(|e| ClientError::wallet(&wallet.dir, e))
}

/// How long a peer may take to answer the first call of a connection.
const FIRST_ANSWER: Duration = Duration::from_secs(5);

/// How long one peer may take to answer a query asked of the peers in turn
/// ([`PeerSet::query`], [`PeerSet::query_until`]) before the next is asked. A correct peer
/// answers within its 2 s wait for the height asked, plus the query's own time.
const QUERY_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// The wallet's file holding the genesis block it is pinned to (encoded `v1::Block`).
const GENESIS_FILE: &str = "network-genesis.pb";
/// Where earlier versions kept the genesis block the first reachable peer served: trust on
/// first use, so not a pin. A wallet holding only that file is not pinned.
const LEGACY_GENESIS_FILE: &str = "genesis.block";
/// The largest genesis block read (a network of hundreds of peers fits in far less).
pub const MAX_GENESIS_BYTES: u64 = 1 << 20;

/// Checks `block` as a genesis block of the CA whose root is `root`, exactly as a peer
/// checks it (`medledger_execution::genesis::Genesis::from_block`: a header committing to
/// the configuration, n ≥ 4 peers named as their certificates name them, distinct
/// keys, valid consensus parameters and ledger format), and that it names that CA.
///
/// # Errors
/// `ClientError::Usage` saying what is wrong with it.
pub fn check_genesis(root: &[u8], block: v1::Block) -> Result<Genesis, ClientError> {
    let genesis = Genesis::from_block(block)
        .map_err(|e| ClientError::Usage(format!("not an acceptable genesis block: {e}")))?;
    if genesis.config.ca_root != root {
        return Err(ClientError::Usage(
            "not an acceptable genesis block: it names another CA root than the wallet's".into(),
        ));
    }
    Ok(genesis)
}

/// Reads a genesis block file of at most [`MAX_GENESIS_BYTES`].
///
/// # Errors
/// `ClientError::Usage` when it cannot be read, is larger, or does not decode.
pub fn read_genesis_file(path: &std::path::Path) -> Result<v1::Block, ClientError> {
    use std::io::Read as _;
    let usage = |why: String| ClientError::Usage(format!("genesis {}: {why}", path.display()));
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_GENESIS_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|e| usage(e.to_string()))?;
    if bytes.len() as u64 > MAX_GENESIS_BYTES {
        return Err(usage(format!("larger than {MAX_GENESIS_BYTES} bytes")));
    }
    v1::Block::decode(bytes.as_slice()).map_err(|e| usage(e.to_string()))
}

/// The genesis this wallet is pinned to (at enrollment, by `network up`, or with
/// `medledger network pin`), checked as [`check_genesis`] does; `None` if not pinned.
///
/// # Errors
/// The pinned block is unreadable or no longer passes [`check_genesis`].
pub fn pinned_genesis(wallet: &Wallet) -> Result<Option<Genesis>, ClientError> {
    let path = wallet.dir.join(GENESIS_FILE);
    let corrupt = |why: String| {
        ClientError::wallet(
            &wallet.dir,
            format!(
                "{GENESIS_FILE} (the network this wallet is pinned to) is unusable: {why}; if \
                 the wallet belongs to a network that was re-created, delete that file and pin \
                 the new one"
            ),
        )
    };
    if !path.exists() {
        return Ok(None);
    }
    let block = read_genesis_file(&path).map_err(|e| corrupt(e.to_string()))?;
    let root = wallet.root()?;
    check_genesis(root.der(), block)
        .map(Some)
        .map_err(|e| corrupt(e.to_string()))
}

/// Pins the network whose genesis block is `genesis` in `wallet`: from then on the wallet
/// talks only to that network's peers (by the keys it names) and refuses any peer serving
/// another. The block is checked first ([`check_genesis`] against the wallet's CA root).
/// Pinning the same network again is a no-op. Returns the network id (SHA-256 of the
/// genesis header), which the user compares with the one the network's administrator
/// publishes, as with the CA root's fingerprint.
///
/// # Errors
/// The block is not a genesis block of this wallet's CA, or the wallet is pinned to another
/// network (`ClientError::Usage`), or the wallet cannot be written.
pub fn pin_network(wallet: &Wallet, genesis: v1::Block) -> Result<[u8; 32], ClientError> {
    use std::io::Write as _;
    let root = wallet.root()?;
    let genesis = check_genesis(root.der(), genesis)?;
    let network_id = genesis.network_id;
    let already = |pinned: Option<Genesis>| match pinned {
        Some(p) if p.network_id == network_id => Ok(Some(network_id)),
        Some(p) => Err(ClientError::Usage(format!(
            "wallet {} is pinned to network {}, not {}: a wallet belongs to one network \
             (enroll another wallet for this one)",
            wallet.dir.display(),
            hex::encode(p.network_id),
            hex::encode(network_id)
        ))),
        None => Ok(None),
    };
    if let Some(id) = already(pinned_genesis(wallet)?)? {
        return Ok(id);
    }
    let path = wallet.dir.join(GENESIS_FILE);
    // A file of its own, synced before it takes the name; never replaces a pin.
    let mut partial = tempfile::NamedTempFile::new_in(&wallet.dir)
        .map_err(|e| ClientError::wallet(&wallet.dir, e.to_string()))?;
    partial
        .write_all(&genesis.block.encode_to_vec())
        .and_then(|_| partial.as_file().sync_all())
        .map_err(|e| ClientError::wallet(&wallet.dir, e.to_string()))?;
    match partial.persist_noclobber(&path) {
        Ok(_) => Ok(network_id),
        // Pinned meanwhile (two pins at once): fine if it is the same network.
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            already(pinned_genesis(wallet)?)?.ok_or_else(|| {
                ClientError::wallet(&wallet.dir, format!("{GENESIS_FILE}: {}", e.error))
            })
        }
        Err(e) => Err(ClientError::wallet(
            &wallet.dir,
            format!("{GENESIS_FILE}: {}", e.error),
        )),
    }
}

/// The id of the network `wallet` is pinned to, if any.
///
/// # Errors
/// The wallet's pinned genesis block is unreadable.
pub fn pinned_network(wallet: &Wallet) -> Result<Option<[u8; 32]>, ClientError> {
    Ok(pinned_genesis(wallet)?.map(|g| g.network_id))
}

/// Block 0 as the peer at `address` serves it, over TLS that accepts only the keys `pins`
/// (the pinned genesis' peers: the wallet's certificate is never shown to anyone else).
async fn fetch_genesis(
    wallet: &Wallet,
    address: &str,
    revoked: &SharedRevocations,
) -> Result<v1::Block, ClientError> {
    let call = async {
        let channel =
            medledger_tls::connect(address, client_tls(wallet, None, revoked)?, revoked.clone())
                .await
                .map_err(|e| unreachable(address, e))?;
        LedgerClient::new(channel)
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .get_block(v1::GetBlockRequest { number: 0 })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| match s.code() {
                // TLS 1.3 clients learn of a refused certificate only at the first read.
                tonic::Code::Unknown | tonic::Code::Cancelled => ClientError::CertificateRefused {
                    reason: format!(
                        "the peer at {address} closed the connection ({}); the wallet's \
                             certificate is revoked, expired or from another CA",
                        s.message()
                    ),
                },
                tonic::Code::Unavailable => unreachable(address, s.message()),
                _ => ClientError::from_status(s),
            })
    };
    tokio::time::timeout(FIRST_ANSWER, call)
        .await
        .map_err(|_| unreachable(address, "no answer in 5 s"))?
}

fn unreachable(address: &str, why: impl ToString) -> ClientError {
    ClientError::PeerUnreachable {
        address: address.to_string(),
        why: why.to_string(),
    }
}

impl PeerSet {
    /// Connects to the network the wallet is pinned to: `bootstrap` is one or more peers
    /// (`host:port`, separated by commas), tried in order and then every peer the pinned
    /// genesis names, until one proves it is a peer of that network (it is enrolled as a
    /// peer of the wallet's CA, and it serves that genesis: a peer added since the genesis
    /// serves as well as one it names). The client then follows the configuration chain
    /// from any peer, with proofs, and talks to the peers of the configuration in force.
    /// Errors: `ClientError::Usage` when the
    /// wallet is not pinned, [`ClientError::CertificateRefused`] when every peer that
    /// answered refused the wallet's certificate, [`ClientError::PeerUnreachable`] when none
    /// answered.
    pub async fn connect(wallet: &Wallet, bootstrap: &str) -> Result<PeerSet, ClientError> {
        // The network is the one the wallet was given, never the one a peer names: a peer
        // could name a network of its own making, in which its signature is a quorum.
        let legacy = wallet.dir.join(LEGACY_GENESIS_FILE).exists();
        let pinned = pinned_genesis(wallet)?.ok_or_else(|| {
            ClientError::Usage(format!(
                "wallet {} is not pinned to a network{}: pin it with the genesis block your \
                 network's administrator gives you (`medledger --wallet {} network pin \
                 --genesis genesis.pb`; wallets made by `medledger network up` are pinned)",
                wallet.dir.display(),
                if legacy {
                    " (its genesis.block was taken from the first peer that answered, so it \
                     is not trusted)"
                } else {
                    ""
                },
                wallet.dir.display()
            ))
        })?;
        let config = &pinned.config;
        // Filled from the ledger once connected; every link checks it from then on.
        let revocations = SharedRevocations::default();
        let mut candidates: Vec<String> = bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_string)
            .collect();
        for peer in &config.peers {
            if !candidates.contains(&peer.address) {
                candidates.push(peer.address.clone());
            }
        }
        // The first peer that proves it serves the pinned network wins; one that lies about
        // it is passed over, not believed and not fatal.
        let mut failures = Vec::new();
        let mut refused = None;
        let mut found = false;
        for address in &candidates {
            let answer = fetch_genesis(wallet, address, &revocations)
                .await
                .and_then(|block| {
                    let served = block.header.as_ref().map(header_hash);
                    if served != Some(pinned.network_id) {
                        return Err(ClientError::Protocol(format!(
                            "the peer at {address} serves another genesis block than the one this \
                         wallet is pinned to ({}): it belongs to another network, or lies",
                            wallet.dir.join(GENESIS_FILE).display()
                        )));
                    }
                    Ok(())
                });
            match answer {
                Ok(()) => {
                    found = true;
                    break;
                }
                Err(e @ ClientError::CertificateRefused { .. }) => refused = Some(e),
                Err(e) => failures.push(e),
            }
        }
        if !found {
            if let Some(refusal) = refused {
                return Err(refusal);
            }
            return Err(match failures.len() {
                1 => failures.remove(0),
                _ => unreachable(
                    &candidates.join(", "),
                    format!(
                        "no peer served this network's genesis ({})",
                        failures
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    ),
                ),
            });
        }
        let network_id = pinned.network_id;
        let certificate = live_certificate(wallet)?;
        let dialer: Box<Dialer> = {
            let (root, certificate, revoked) =
                (wallet.root()?, certificate.clone(), revocations.clone());
            let dir = wallet.dir.clone();
            Box::new(move |pins| {
                let provider = medledger_tls::provider();
                let verifier = medledger_tls::EnrollmentServerVerifier::for_role(
                    medledger_crypto::Role::Peer,
                    root.clone(),
                    revoked.clone(),
                    Some(pins),
                    provider.clone(),
                );
                medledger_tls::client_config(certificate.clone(), verifier, provider)
                    .map(Arc::new)
                    .map_err(|e| ClientError::wallet(&dir, e))
            })
        };
        let links = make_links(&pinned.configuration, None, &dialer, &revocations)?;
        let peers = PeerSet {
            chain: std::sync::RwLock::new(ConfigChain::new(&pinned)),
            chain_learned: std::sync::Mutex::new(None),
            revocations,
            revocation_log: std::sync::Mutex::new(RevocationLog::new()),
            root: pinned.root.clone(),
            links: std::sync::RwLock::new(Arc::new(links)),
            dialer,
            network_id,
            certificate,
            signing: medledger_crypto::SigningIdentity::from_pkcs8_der(
                &wallet.signing.to_pkcs8_der(),
            )
            .map_err(|e| ClientError::wallet(&wallet.dir, e))?,
            known_height: std::sync::atomic::AtomicU64::new(0),
        };
        // The configuration in force, before the first transaction is made under it, and the
        // revocations. A network whose peers cannot serve them yet is still usable with what
        // is known: a proof under a newer configuration makes the client ask again.
        peers.refresh(Duration::ZERO).await;
        Ok(peers)
    }

    /// The certificate serials the ledger revoked, as far as this client learned them: pass
    /// them to every TLS link it opens ([`crate::files::connect_gateway`]).
    pub fn revocations(&self) -> &SharedRevocations {
        &self.revocations
    }

    /// Takes in the revocations the peers serve, asking every peer at once from the first
    /// sequence number not known yet and following each peer's pages; each record is
    /// believed only when the CA root signed it. A peer's answer that is larger than a page
    /// or holds records out of place is dropped before any further signature is checked,
    /// and ends that peer's turn. All within [`LEARN_REVOCATIONS_DEADLINE`]: what was taken
    /// in by then stays. Returns how many serials were new.
    pub async fn learn_revocations(&self) -> usize {
        let added = std::sync::atomic::AtomicUsize::new(0);
        let _ =
            tokio::time::timeout(LEARN_REVOCATIONS_DEADLINE, self.revocation_pages(&added)).await;
        added.into_inner()
    }

    async fn revocation_pages(&self, added: &std::sync::atomic::AtomicUsize) {
        let mut calls = tokio::task::JoinSet::new();
        let clients = self.links().clients.clone();
        for (i, client) in clients.iter().enumerate() {
            let client = client.clone();
            let from = self.first_unknown_revocation();
            calls.spawn(async move { (i, revocation_page(client, from).await, from) });
        }
        while let Some(joined) = calls.join_next().await {
            let Ok((i, mut page, mut from)) = joined else {
                continue;
            };
            // This peer's pages, one after the other, while they are full and true: a page
            // holding anything the CA did not sign, or out of place, ends this peer's turn
            // (a liar answering full pages of junk must not keep the client asking).
            while let Some(records) = page {
                let full = records.len() as u64 == REVOCATIONS_PER_PAGE;
                let (new, whole) = self.take_revocations(from, records);
                added.fetch_add(new, std::sync::atomic::Ordering::Relaxed);
                if !full || !whole {
                    break;
                }
                from = from.saturating_add(REVOCATIONS_PER_PAGE);
                page = revocation_page(clients[i].clone(), from).await;
            }
        }
    }

    /// The first CA sequence number this client holds no record of.
    fn first_unknown_revocation(&self) -> u64 {
        self.revocation_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first_unknown()
    }

    /// Takes in one page answered from sequence `from` ([`RevocationLog::take_page`]);
    /// returns how many serials were new, and whether the page was whole.
    fn take_revocations(
        &self,
        from: u64,
        records: Vec<v1::SignedRevocationRecord>,
    ) -> (usize, bool) {
        let taken = self
            .revocation_log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_page(&self.root.public_key(), from, &records);
        let added = taken.serials.len();
        for serial in taken.serials {
            self.revocations.insert(serial);
        }
        (added, taken.whole)
    }

    /// The latest configuration this client followed (sequence 0: the genesis's).
    pub fn configuration(&self) -> Configuration {
        self.chain
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current()
            .clone()
    }

    /// The configuration links this client followed from the genesis, each checked.
    pub fn configuration_links(&self) -> Vec<v1::ConfigLink> {
        self.chain
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .links()
            .to_vec()
    }

    fn parameters(&self) -> v1::ConsensusParameters {
        self.configuration().parameters
    }

    /// Whether the network keeps key material as private data (ledger format 5,
    /// docs/adr/0017): grants, rotations and uploads then send key material beside the
    /// transaction ([`PeerSet::submit_private`]), and readers get it with the query
    /// `access_keys`.
    pub fn keeps_private_data(&self) -> bool {
        self.parameters().ledger_format >= medledger_execution::genesis::PRIVATE_KEYS_FORMAT
    }

    /// Whether the network keeps study copies' wrapped file keys as private data too (ledger
    /// format 6): a share sends the key beside the transaction, and the study's researcher
    /// gets it with the query `study_access_keys`.
    pub fn keeps_study_keys_private(&self) -> bool {
        self.parameters().ledger_format >= medledger_execution::genesis::PRIVATE_STUDY_KEYS_FORMAT
    }

    /// Whether the network keeps free text as private data too (ledger format 7): an
    /// emergency access sends its sealed reason beside the transaction
    /// ([`PeerSet::emergency_reason_private`]), and its readers get it with the query
    /// `sealed_reasons` ([`PeerSet::sealed_reasons`]).
    pub fn keeps_free_text_private(&self) -> bool {
        self.parameters().ledger_format >= medledger_execution::genesis::PRIVATE_FREE_TEXT_FORMAT
    }

    /// Follows the configuration chain from the latest configuration known, asking every
    /// peer at once: every link is checked against the configuration before it
    /// ([`ConfigChain::follow`]), so a peer can withhold links (the others serve them) but
    /// not forge one. With `wanted`, stops once that configuration is known. Returns the
    /// sequence of the latest configuration known.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] when `wanted` is not known after every peer answered.
    pub async fn learn_configuration(&self, wanted: Option<&[u8]>) -> Result<u64, ClientError> {
        let known = || {
            let chain = self.chain.read().unwrap_or_else(|p| p.into_inner());
            wanted.is_none_or(|h| chain.by_hash(h).is_some())
        };
        let from = self.configuration().sequence + 1;
        let mut calls = tokio::task::JoinSet::new();
        let links = self.links();
        for (i, client) in links.clients.iter().enumerate() {
            let client = client.clone();
            calls.spawn(async move { (i, config_links(client, from).await) });
        }
        let mut problems = Vec::new();
        while let Some(joined) = calls.join_next().await {
            let Ok((i, answer)) = joined else { continue };
            if let Err(problem) = self.follow_links(&links.clients[i], answer).await {
                problems.push(format!("{}: {problem}", links.names[i]));
            }
            if wanted.is_some() && known() {
                calls.abort_all();
                break;
            }
        }
        // The peers of the configuration followed are the ones this client talks to.
        if let Err(e) = self.follow_peers() {
            problems.push(format!("the links to the peers in force: {e}"));
        }
        let current = self.configuration().sequence;
        if known() {
            Ok(current)
        } else {
            Err(ClientError::Protocol(format!(
                "no peer proved the configuration a block names (after configuration \
                 {current}): {}",
                problems.join("; ")
            )))
        }
    }

    /// [`PeerSet::learn_configuration`] and [`PeerSet::learn_revocations`] when they were
    /// last followed `max_age` ago or more (or never): before signing a transaction, so that
    /// its expiry fits the transaction lifetime in force and no revoked server is trusted. A
    /// failure leaves what is known as it was.
    pub async fn refresh(&self, max_age: Duration) {
        let fresh = self
            .chain_learned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some_and(|at| at.elapsed() < max_age);
        if !fresh {
            let _ = self.learn_configuration(None).await;
            self.learn_revocations().await;
            *self.chain_learned.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(std::time::Instant::now());
        }
    }

    /// Follows the links a peer answered (`first`), then its further pages from `client`.
    async fn follow_links(
        &self,
        client: &LedgerClient<Channel>,
        first: Result<Vec<v1::ConfigLink>, String>,
    ) -> Result<(), String> {
        let mut links = first?;
        loop {
            let full = links.len() as u64 >= CONFIG_LINKS_PER_PAGE;
            {
                let mut chain = self.chain.write().unwrap_or_else(|p| p.into_inner());
                for link in &links {
                    // Another peer's answer may have taken the chain past this link.
                    chain
                        .follow_new(link)
                        .map_err(|(next, e)| format!("configuration {next}: {e}"))?;
                }
            }
            if !full {
                return Ok(());
            }
            links = config_links(client.clone(), self.configuration().sequence + 1).await?;
        }
    }

    /// Notes that `block` has committed (queries then see at least it).
    fn saw(&self, block: u64) {
        self.known_height
            .fetch_max(block, std::sync::atomic::Ordering::SeqCst);
    }

    /// The height queries must reflect: what this client saw commit, and at first the highest
    /// height any peer reports, so a query sees what an earlier process committed.
    async fn query_floor(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let known = self.known_height.load(Ordering::SeqCst);
        if known > 0 {
            return known;
        }
        let mut calls = tokio::task::JoinSet::new();
        for client in &self.links().clients {
            let mut client = client.clone();
            calls.spawn(async move {
                tokio::time::timeout(
                    std::time::Duration::from_secs(2),
                    client.get_status(v1::GetStatusRequest {}),
                )
                .await
                .ok()
                .and_then(|r| r.ok())
                .map(|r| r.into_inner().height)
            });
        }
        let mut heights = Vec::new();
        while let Some(answer) = calls.join_next().await {
            heights.push(answer.ok().flatten().unwrap_or(0));
        }
        // The (f+1)-th highest: at least one correct peer is that high, and no f liars can
        // push it up (a height no peer reaches would make every query wait and fail).
        heights.sort_unstable_by(|a, b| b.cmp(a));
        let floor = heights.get(self.votes_needed() - 1).copied().unwrap_or(0);
        self.saw(floor);
        floor
    }

    /// How long after a transaction is signed it may still be ordered, at most (ms): the
    /// network's longest transaction life plus its allowed clock skew.
    pub fn longest_pending_ms(&self) -> i64 {
        let p = self.parameters();
        (p.max_tx_lifetime_ms.saturating_add(p.max_clock_skew_ms)).min(i64::MAX as u64) as i64
    }

    /// Whether a transaction expiring at `expires_at_ms` (Unix ms) could still be ordered
    /// now, by this machine's clock: after now, and no further ahead than the network's
    /// longest transaction life plus its allowed clock skew (genesis parameters).
    ///
    /// # Errors
    /// Why not, in words for the caller.
    pub fn check_expiry_now(&self, expires_at_ms: i64) -> Result<(), String> {
        let p = self.parameters();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let latest = now
            .saturating_add(p.max_tx_lifetime_ms.min(i64::MAX as u64) as i64)
            .saturating_add(p.max_clock_skew_ms.min(i64::MAX as u64) as i64);
        if expires_at_ms <= now {
            Err(format!(
                "the transaction expired (at {expires_at_ms} ms, now {now} ms): sign it again"
            ))
        } else if expires_at_ms > latest {
            Err(format!(
                "the transaction expires at {expires_at_ms} ms, later than any peer accepts \
                 ({latest} ms): is the client's clock right?"
            ))
        } else {
            Ok(())
        }
    }

    pub fn n(&self) -> usize {
        self.links().clients.len()
    }

    /// The names of the peers in force, by replica id.
    pub fn names(&self) -> Vec<String> {
        self.links().names.clone()
    }

    /// The addresses of the peers in force, by replica id.
    pub fn addresses(&self) -> Vec<String> {
        self.links().addresses.clone()
    }

    /// The links to the peers; one whose peer's certificate ends within
    /// [`REMAKE_BEFORE_END_S`] is made again first (the peer renewed it well before; the
    /// connection made with the old one would be cut at its end, with the calls on it).
    fn links(&self) -> Arc<Links> {
        let links = self.links.read().unwrap_or_else(|p| p.into_inner()).clone();
        let now = medledger_tls::now_unix();
        let ending = |(end, made): &(Arc<std::sync::atomic::AtomicI64>, std::time::Instant)| {
            let end = end.load(std::sync::atomic::Ordering::Relaxed);
            // Once per window at most: a peer that did not renew comes back the same.
            end != i64::MAX
                && now >= end.saturating_sub(REMAKE_BEFORE_END_S)
                && made.elapsed() >= Duration::from_secs(REMAKE_BEFORE_END_S as u64)
        };
        if !links.ends.iter().any(ending) {
            return links;
        }
        let mut guard = self.links.write().unwrap_or_else(|p| p.into_inner());
        if !Arc::ptr_eq(&guard, &links) {
            return guard.clone();
        }
        let mut next = Links {
            members: links.members.clone(),
            clients: links.clients.clone(),
            ends: links.ends.clone(),
            names: links.names.clone(),
            addresses: links.addresses.clone(),
        };
        for i in 0..next.members.len() {
            if ending(&next.ends[i])
                && let Ok((client, end)) =
                    link_to(&next.members[i], &self.dialer, &self.revocations)
            {
                next.clients[i] = client;
                next.ends[i] = end;
            }
        }
        *guard = Arc::new(next);
        guard.clone()
    }

    /// Links to the peers of the configuration followed, when it changed them (docs/adr/
    /// 0011): a link to a peer that stays (same key, same address) is kept, one to a peer
    /// that joined is made (pinned to its key in that configuration), one to a peer that
    /// left is dropped.
    fn follow_peers(&self) -> Result<(), ClientError> {
        let configuration = self.configuration();
        let current = self.links();
        if members_of(&configuration) == current.members {
            return Ok(());
        }
        let links = make_links(
            &configuration,
            Some(&current),
            &self.dialer,
            &self.revocations,
        )?;
        *self.links.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(links);
        Ok(())
    }

    /// f + 1: the peers whose votes a commit proof needs.
    pub fn votes_needed(&self) -> usize {
        self.configuration().weak_quorum()
    }

    /// How long a transaction signed now may wait to be ordered (ms): half the network's
    /// longest, so a client clock off by up to that much still makes valid transactions.
    pub fn transaction_lifetime_ms(&self) -> i64 {
        (self.parameters().max_tx_lifetime_ms / 2).min(i64::MAX as u64) as i64
    }

    /// [`PeerSet::transaction`] under the configuration in force: the chain is followed
    /// first when it was last followed more than 30 s ago.
    pub async fn signed(&self, function: &str, args: Vec<u8>) -> ([u8; 32], v1::Envelope) {
        self.refresh(CONFIGURATION_MAX_AGE).await;
        self.transaction(function, args)
    }

    /// The network's CA root, as pinned by the wallet's genesis.
    pub fn root(&self) -> &medledger_crypto::RootCertificate {
        &self.root
    }

    /// The certificate this client presents in handshakes and names in its transactions.
    pub fn certificate(&self) -> Arc<medledger_tls::LiveCertificate> {
        self.certificate.clone()
    }

    /// Presents `certificate_der`, a renewal of this client's certificate for the same
    /// signing key, from now on: in every new handshake and every transaction signed after.
    ///
    /// # Errors
    /// [`ClientError::Protocol`] when it does not certify this client's signing key.
    pub fn present(&self, certificate_der: Vec<u8>) -> Result<(), ClientError> {
        self.certificate
            .replace(certificate_der, self.signing.to_pkcs8_der().to_vec())
            .map_err(|e| ClientError::Protocol(format!("the renewed certificate: {e}")))?;
        // New links to every peer, made with the new certificate: calls under way finish on
        // the old ones, which close once no call holds them, well before the old
        // certificate ends (and the peers would cut them).
        let links = make_links(&self.configuration(), None, &self.dialer, &self.revocations)?;
        *self.links.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(links);
        Ok(())
    }

    /// This client's Ed25519 signing key, public half (32 bytes): the creator key of every
    /// transaction it signs.
    pub fn signing_key(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs `message` for `domain` with this client's key.
    pub(crate) fn sign(
        &self,
        domain: SignatureDomain,
        message: &[u8],
    ) -> medledger_crypto::Signature {
        self.signing.sign(domain, message)
    }

    /// The links to the peers in force, by replica id: each peer's name and its client.
    pub(crate) fn ledger_clients(&self) -> Vec<(String, LedgerClient<Channel>)> {
        let links = self.links();
        links
            .names
            .iter()
            .cloned()
            .zip(links.clients.iter().cloned())
            .collect()
    }

    /// A signed transaction calling `function` with encoded `args`.
    pub fn transaction(&self, function: &str, args: Vec<u8>) -> ([u8; 32], v1::Envelope) {
        self.transaction_committing(function, args, Vec::new())
    }

    /// A signed transaction calling `function` with encoded `args` and committing to
    /// private values (`commitments`, docs/adr/0017); it carries no acknowledgments yet.
    pub fn transaction_committing(
        &self,
        function: &str,
        args: Vec<u8>,
        commitments: Vec<Vec<u8>>,
    ) -> ([u8; 32], v1::Envelope) {
        let mut nonce = [0u8; 32];
        rand_core::OsRng.fill_bytes(&mut nonce);
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let cert_der = self.certificate.certificate_der();
        let cert_hash = certificate_hash(&cert_der);
        let transaction = v1::Transaction {
            function: function.to_string(),
            args,
            creator_cert_hash: cert_hash.to_vec(),
            creator_certificate: cert_der,
            nonce: nonce.to_vec(),
            client_time_ms: now_ms,
            network_id: self.network_id.to_vec(),
            expires_at_ms: now_ms.saturating_add(self.transaction_lifetime_ms()),
            private_commitments: commitments,
        }
        .encode_to_vec();
        let signature = self
            .signing
            .sign(SignatureDomain::Transaction, &transaction);
        let tx_id = medledger_crypto::transaction_id(&nonce, &cert_hash);
        let envelope = v1::Envelope {
            kind: Some(v1::envelope::Kind::Transaction(v1::SignedTransaction {
                transaction,
                signature: signature.to_bytes().to_vec(),
                private_data_acks: Vec::new(),
                acks_signature: Vec::new(),
            })),
        };
        (tx_id, envelope)
    }

    /// Signs and submits a transaction; returns its outcome once a peer proved it.
    pub async fn submit(&self, function: &str, args: Vec<u8>) -> Result<Committed, ClientError> {
        let (_, envelope) = self.signed(function, args).await;
        self.submit_envelope(envelope).await
    }

    /// Submits an envelope to every peer at once; returns the outcome of the first commit
    /// proof that checks ([`PeerSet::check_proof`]), or fails when no peer can give one.
    /// A peer that answers with a proof that does not check is passed over, never believed.
    pub async fn submit_envelope(&self, envelope: v1::Envelope) -> Result<Committed, ClientError> {
        let sent = envelope_hash(&envelope.encode_to_vec());
        let mut calls = tokio::task::JoinSet::new();
        let links = self.links();
        for (i, client) in links.clients.iter().enumerate() {
            let mut client = client.clone();
            let request = v1::SubmitRequest {
                envelope: Some(envelope.clone()),
            };
            calls.spawn(async move {
                let mut request = tonic::Request::new(request);
                request.set_timeout(Duration::from_secs(60));
                (i, client.submit(request).await)
            });
        }
        let mut errors: Vec<(usize, tonic::Status)> = Vec::new();
        // A proven refusal: its outcome is settled, but its words are one peer's. The words
        // of every peer that proved it are gathered for a moment, and shown only when f+1
        // gave the same (so a correct peer did).
        let mut refused: Option<(Committed, Vec<String>)> = None;
        loop {
            let next = match &refused {
                None => calls.join_next().await,
                Some(_) => tokio::time::timeout(WORDS_GRACE, calls.join_next())
                    .await
                    .unwrap_or(None),
            };
            let Some(joined) = next else { break };
            let Ok((i, outcome)) = joined else { continue };
            match outcome {
                Ok(response) => {
                    let response = response.into_inner();
                    match self.proven(&sent, response.proof).await {
                        Ok(committed) if committed.is_valid() => {
                            calls.abort_all();
                            return Ok(committed);
                        }
                        Ok(committed) => {
                            let words = peer_words(&response.message);
                            refused
                                .get_or_insert_with(|| (committed, Vec::new()))
                                .1
                                .push(words);
                        }
                        Err(e) => errors.push((
                            i,
                            tonic::Status::data_loss(format!("its commit proof: {e}")),
                        )),
                    }
                }
                Err(status) => errors.push((i, status)),
            }
            if let Some((_, words)) = &refused
                && words.len() >= self.votes_needed()
                && agreed_words(words, self.votes_needed()).is_some()
            {
                break;
            }
        }
        if let Some((mut committed, words)) = refused {
            calls.abort_all();
            committed.message = agreed_words(&words, self.votes_needed()).unwrap_or_default();
            return Ok(committed);
        }
        // No proof. A refusal before ordering (the transaction is in no block) is a peer's
        // word, not a proof: it is reported only when f+1 peers give the same kind (so a
        // correct one does), else as no proof. Peers name a validation refusal's kind in the
        // metadata; timeouts, overload and unreachable peers are not refusals.
        if let Some(refusal) = agreed_refusal(&errors, self.votes_needed()) {
            return Err(refusal);
        }
        let detail = errors
            .iter()
            .map(|(i, s)| format!("{}: {}", links.names[*i], peer_words(s.message())))
            .collect::<Vec<_>>()
            .join("; ");
        Err(ClientError::NoQuorum {
            needed: self.votes_needed(),
            detail,
        })
    }

    /// Checks a commit proof another party relayed (the storage gateway) for `envelope`, the
    /// envelope this client signed and sent.
    ///
    /// # Errors
    /// `ClientError::Protocol` saying why the proof does not prove that envelope's outcome.
    pub async fn check_proof(
        &self,
        envelope: &v1::Envelope,
        proof: Option<v1::CommitProof>,
    ) -> Result<Committed, ClientError> {
        self.proven(&envelope_hash(&envelope.encode_to_vec()), proof)
            .await
            .map_err(|e| ClientError::Protocol(format!("the gateway's commit proof: {e}")))
    }

    /// Checks a block a peer served, whole ([`check_block`]: f+1 votes on its header, its
    /// envelopes and every result under the header's roots), following the configuration
    /// chain first when the block names a configuration this client has not followed yet.
    ///
    /// # Errors
    /// Why the block is not proven, as text.
    pub async fn check_block(&self, block: &v1::Block) -> Result<(), String> {
        let config = block.header.as_ref().map(|h| h.config.clone());
        self.against_chain(config, |chain| check_block(chain, block))
            .await
    }

    /// Runs `check` against the configuration chain; when it names a configuration this
    /// client has not followed yet (`config`, the header's), follows the chain first and runs
    /// it again.
    async fn against_chain<T>(
        &self,
        config: Option<Vec<u8>>,
        check: impl Fn(&ConfigChain) -> Result<T, ProofError>,
    ) -> Result<T, String> {
        let run = || check(&self.chain.read().unwrap_or_else(|p| p.into_inner()));
        match run() {
            Err(ProofError::UnknownConfiguration) => {
                self.learn_configuration(config.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                run()
            }
            other => other,
        }
        .map_err(|e| e.to_string())
    }

    /// Checks `proof` against the configuration chain, following it first when the proof's
    /// block names a configuration this client has not followed yet.
    async fn proven(
        &self,
        sent: &[u8; 32],
        proof: Option<v1::CommitProof>,
    ) -> Result<Committed, String> {
        let proof = proof.ok_or("no commit proof")?;
        let config = proof.header.as_ref().map(|h| h.config.clone());
        let proven = self
            .against_chain(config, |chain| check_commit_proof(chain, &proof, sent))
            .await?;
        self.saw(proven.block);
        let r = proven.result;
        Ok(Committed {
            tx_id: r.tx_id.as_slice().try_into().unwrap_or([0; 32]),
            block: proven.block,
            status: v1::TxStatus::try_from(r.status).unwrap_or(v1::TxStatus::Unspecified),
            message: String::new(),
            code: r.code,
            result: r.result,
            proof,
        })
    }

    /// [`PeerSet::query`] with typed arguments and result.
    pub async fn query_as<R: prost::Message + Default>(
        &self,
        function: &str,
        args: impl prost::Message,
    ) -> Result<R, ClientError> {
        let answer = self.query(function, args.encode_to_vec()).await?;
        R::decode(answer.result.as_slice())
            .map_err(|e| ClientError::Protocol(format!("{function} answer: {e}")))
    }

    /// [`PeerSet::query_as`], with the height the answer reflects (to show with a listing).
    pub async fn query_at<R: prost::Message + Default>(
        &self,
        function: &str,
        args: impl prost::Message,
    ) -> Result<(R, u64), ClientError> {
        let answer = self.query(function, args.encode_to_vec()).await?;
        let decoded = R::decode(answer.result.as_slice())
            .map_err(|e| ClientError::Protocol(format!("{function} answer: {e}")))?;
        Ok((decoded, answer.height))
    }

    /// A read-only chaincode function, answered by the first peer that can: one peer's word,
    /// for callers that neither act on it nor show it to a person as the ledger's (a load
    /// generator, a health probe). Everything else uses [`PeerSet::query_agreed`].
    pub async fn query(
        &self,
        function: &str,
        args: Vec<u8>,
    ) -> Result<v1::QueryResponse, ClientError> {
        self.query_each(function, args, None, None).await
    }

    /// [`PeerSet::query`], for an answer the caller checks itself, such as a private value
    /// against its commitment (docs/adr/0017), which one peer may lack or lie about: every
    /// peer is asked in turn until one gives an answer `accept` takes; refusals and answers
    /// it refuses are passed over, since any one peer's word may be a lie.
    ///
    /// # Errors
    /// No peer gave an accepted answer: the first peer's refusal if any refused (what the
    /// correct ones answer when nobody holds a right), else the last reason.
    pub async fn query_until(
        &self,
        function: &str,
        args: Vec<u8>,
        accept: impl Fn(&v1::QueryResponse) -> Result<(), String> + Sync,
    ) -> Result<v1::QueryResponse, ClientError> {
        self.query_each(function, args, None, Some(&accept)).await
    }

    /// [`PeerSet::query_until`], asking first the peer that private values placed by
    /// `placement` (a record's pseudonym, as private data is placed by it: [`placement_start`])
    /// went to first, then the next ones in turn.
    pub async fn query_until_from(
        &self,
        function: &str,
        args: Vec<u8>,
        placement: Option<&[u8]>,
        accept: impl Fn(&v1::QueryResponse) -> Result<(), String> + Sync,
    ) -> Result<v1::QueryResponse, ClientError> {
        self.query_each(function, args, placement, Some(&accept))
            .await
    }

    /// Asks the peers in turn (from the one `placement` names, else the first). Without
    /// `accept`, the first answer or refusal is final and only unreachable peers are passed
    /// over; with it, see [`PeerSet::query_until`].
    async fn query_each(
        &self,
        function: &str,
        args: Vec<u8>,
        placement: Option<&[u8]>,
        accept: Option<AcceptAnswer<'_>>,
    ) -> Result<v1::QueryResponse, ClientError> {
        // A read-only client follows the configuration and the revocations too.
        self.refresh(CONFIGURATION_MAX_AGE).await;
        let mut last = None;
        let mut refused = None;
        let min_height = self.query_floor().await;
        let links = self.links();
        let count = links.clients.len();
        let start = placement.map_or(0, |key| placement_start(key, count));
        for i in (0..count).map(|k| (start + k) % count) {
            let mut client = links.clients[i].clone();
            let mut request = tonic::Request::new(v1::QueryRequest {
                function: function.to_string(),
                args: args.clone(),
                min_height,
            });
            request.set_timeout(QUERY_CALL_TIMEOUT);
            // A peer that holds the call open without answering (a Byzantine one keeps its
            // link alive) is passed over like an unreachable one.
            let Ok(answered) =
                tokio::time::timeout(QUERY_CALL_TIMEOUT, client.query(request)).await
            else {
                last = Some(unreachable(&links.addresses[i], "no answer in time"));
                continue;
            };
            match answered {
                Ok(r) => {
                    let answer = r.into_inner();
                    match accept.map_or(Ok(()), |accept| accept(&answer)) {
                        Ok(()) => return Ok(answer),
                        Err(why) => {
                            last = Some(ClientError::Protocol(format!(
                                "{}: {why}",
                                links.addresses[i]
                            )));
                        }
                    }
                }
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable
                            | tonic::Code::Unknown
                            | tonic::Code::Cancelled
                            | tonic::Code::DeadlineExceeded
                    ) =>
                {
                    last = Some(unreachable(&links.addresses[i], s.message()));
                }
                Err(s) if accept.is_some() => {
                    refused.get_or_insert(ClientError::from_status(s));
                }
                Err(s) => return Err(ClientError::from_status(s)),
            }
        }
        Err(refused
            .or(last)
            .unwrap_or_else(|| ClientError::Protocol("no peers".into())))
    }

    /// [`PeerSet::query_agreed`] with typed arguments and result.
    pub async fn query_agreed_as<R: prost::Message + Default>(
        &self,
        function: &str,
        args: impl prost::Message,
    ) -> Result<R, ClientError> {
        let answer = self.query_agreed(function, args.encode_to_vec()).await?;
        R::decode(answer.result.as_slice())
            .map_err(|e| ClientError::Protocol(format!("{function} answer: {e}")))
    }

    /// [`PeerSet::query_agreed`] with typed arguments and result, and the height the answer
    /// reflects: for listings shown to a person (no single peer's answer is shown as the
    /// ledger's).
    pub async fn query_agreed_at<R: prost::Message + Default>(
        &self,
        function: &str,
        args: impl prost::Message,
    ) -> Result<(R, u64), ClientError> {
        let answer = self.query_agreed(function, args.encode_to_vec()).await?;
        let decoded = R::decode(answer.result.as_slice())
            .map_err(|e| ClientError::Protocol(format!("{function} answer: {e}")))?;
        Ok((decoded, answer.height))
    }

    /// A read-only chaincode function whose answer the client acts on (the key it encrypts
    /// to, whether it may write): asked of every peer at least at this client's height, and
    /// believed only when f+1 peers (so a correct one) gave the very same answer. The
    /// answer's height is the lowest of theirs. A chaincode refusal counts as an answer
    /// too, when f+1 peers gave it.
    ///
    /// # Errors
    /// The agreed refusal; `ClientError::NoQuorum` when no f+1 peers agreed (too few
    /// reachable, or they answered from states that differ: ask again).
    pub async fn query_agreed(
        &self,
        function: &str,
        args: Vec<u8>,
    ) -> Result<v1::QueryResponse, ClientError> {
        self.refresh(CONFIGURATION_MAX_AGE).await;
        let min_height = self.query_floor().await;
        let needed = self.votes_needed();
        let mut calls = tokio::task::JoinSet::new();
        let links = self.links();
        for (i, client) in links.clients.iter().enumerate() {
            let mut client = client.clone();
            let request = v1::QueryRequest {
                function: function.to_string(),
                args: args.clone(),
                min_height,
            };
            calls.spawn(async move {
                let mut request = tonic::Request::new(request);
                request.set_timeout(Duration::from_secs(10));
                (i, client.query(request).await)
            });
        }
        let mut answers: HashMap<Vec<u8>, Vec<u64>> = HashMap::new();
        let mut errors: Vec<(usize, tonic::Status)> = Vec::new();
        while let Some(joined) = calls.join_next().await {
            let Ok((i, outcome)) = joined else { continue };
            match outcome {
                Ok(response) => {
                    let response = response.into_inner();
                    let heights = answers.entry(response.result.clone()).or_default();
                    heights.push(response.height);
                    if heights.len() >= needed {
                        let height = heights.iter().copied().min().unwrap_or(min_height);
                        calls.abort_all();
                        return Ok(v1::QueryResponse {
                            result: response.result,
                            height,
                        });
                    }
                }
                Err(status) => errors.push((i, status)),
            }
        }
        if let Some(refusal) = agreed_refusal(&errors, needed) {
            return Err(refusal);
        }
        let detail = errors
            .iter()
            .map(|(i, s)| format!("{}: {}", links.names[*i], peer_words(s.message())))
            .chain(
                (!answers.is_empty())
                    .then(|| format!("{} different answers from the others", answers.len())),
            )
            .collect::<Vec<_>>()
            .join("; ");
        Err(ClientError::NoAgreement { needed, detail })
    }

    /// The client for peer `i` of the configuration in force (at most [`PeerSet::n`]), for
    /// calls the SDK does not wrap.
    ///
    /// # Panics
    /// When `i` is not below [`PeerSet::n`].
    pub fn peer(&self, i: usize) -> LedgerClient<Channel> {
        self.links().clients[i].clone()
    }
}

/// (signing key, address) of each peer of `configuration`, by replica id.
fn members_of(configuration: &Configuration) -> Vec<([u8; 32], String)> {
    configuration
        .peer_keys
        .iter()
        .zip(&configuration.peers)
        .map(|(k, p)| (k.to_bytes(), p.address.clone()))
        .collect()
}

/// Links to the peers of `configuration`, keeping those of `current` to peers that stay.
/// How long before a peer's certificate ends a link to it is made again (seconds).
const REMAKE_BEFORE_END_S: i64 = 5;

/// A link to the peer `(key, address)`, pinned to that key, connected at first use; with
/// where its server certificate's end is kept, and when it was made.
#[allow(clippy::type_complexity)]
fn link_to(
    (key, address): &([u8; 32], String),
    dialer: &Dialer,
    revocations: &SharedRevocations,
) -> Result<
    (
        LedgerClient<Channel>,
        (Arc<std::sync::atomic::AtomicI64>, std::time::Instant),
    ),
    ClientError,
> {
    let (channel, end) = medledger_tls::connect_lazy_watching(
        address,
        dialer(BTreeSet::from([*key]))?,
        revocations.clone(),
    )
    .map_err(|e| unreachable(address, e))?;
    let client = LedgerClient::new(channel)
        .max_decoding_message_size(MAX_RESPONSE_BYTES)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    Ok((client, (end, std::time::Instant::now())))
}

fn make_links(
    configuration: &Configuration,
    current: Option<&Links>,
    dialer: &Dialer,
    revocations: &SharedRevocations,
) -> Result<Links, ClientError> {
    let members = members_of(configuration);
    let mut clients = Vec::with_capacity(members.len());
    let mut ends = Vec::with_capacity(members.len());
    for member in &members {
        let kept = current.and_then(|c| {
            c.members
                .iter()
                .position(|m| m == member)
                .map(|i| (c.clients[i].clone(), c.ends[i].clone()))
        });
        let (client, end) = match kept {
            Some(kept) => kept,
            None => link_to(member, dialer, revocations)?,
        };
        clients.push(client);
        ends.push(end);
    }
    Ok(Links {
        ends,
        names: configuration.peers.iter().map(|p| p.name.clone()).collect(),
        addresses: configuration
            .peers
            .iter()
            .map(|p| p.address.clone())
            .collect(),
        members,
        clients,
    })
}

/// How long a proven refusal waits for other peers' words for it.
const WORDS_GRACE: Duration = Duration::from_secs(2);

/// Words that at least `needed` peers gave alike, if any.
fn agreed_words(words: &[String], needed: usize) -> Option<String> {
    words
        .iter()
        .find(|w| words.iter().filter(|o| o == w).count() >= needed)
        .cloned()
}

/// Most characters of one peer's words shown (they are unproven, and a lying peer's could be
/// long).
const MAX_PEER_WORDS: usize = 300;

/// A peer's words, cut to [`MAX_PEER_WORDS`] characters.
fn peer_words(words: &str) -> String {
    match words.char_indices().nth(MAX_PEER_WORDS) {
        Some((cut, _)) => format!("{}…", &words[..cut]),
        None => words.to_string(),
    }
}

/// The metadata key under which a peer names a refusal's `v1::TxStatus` (its number).
pub const TX_STATUS_METADATA: &str = "medledger-tx-status";

/// Whether a peer's error refuses the transaction (it will not be ordered by that peer),
/// as opposed to "not now": unreachable, overloaded, timed out, or a proof that did not check.
fn is_refusal(s: &tonic::Status) -> bool {
    s.metadata().contains_key(TX_STATUS_METADATA)
        || !matches!(
            s.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
                | tonic::Code::ResourceExhausted
                | tonic::Code::DataLoss
        )
}

/// The refusal at least `needed` peers gave alike (by [`most_common`] kind), if any: the
/// kind is agreed, the words are one of them's and shown as such.
fn agreed_refusal(errors: &[(usize, tonic::Status)], needed: usize) -> Option<ClientError> {
    let refusals: Vec<(usize, tonic::Status)> = errors
        .iter()
        .filter(|(_, s)| is_refusal(s))
        .cloned()
        .collect();
    let (count, status) = most_common(&refusals).filter(|(count, _)| *count >= needed)?;
    let words = format!(
        "refused by {count} peers; one of them says: {}",
        peer_words(status.message())
    );
    Some(ClientError::from_status(tonic::Status::with_metadata(
        status.code(),
        words,
        status.metadata().clone(),
    )))
}

/// The most common kind among `errors` — gRPC code and the `TxStatus` a peer names in the
/// metadata — how many gave it, and the first of them. Peers may word the same refusal
/// differently (a time, a version), so words do not count.
fn most_common(errors: &[(usize, tonic::Status)]) -> Option<(usize, tonic::Status)> {
    // (code, TxStatus named) → (how many, the first's index)
    type Kind = (i32, Option<Vec<u8>>);
    let mut counts: HashMap<Kind, (usize, usize)> = HashMap::new();
    for (idx, (_, s)) in errors.iter().enumerate() {
        let status = s
            .metadata()
            .get(TX_STATUS_METADATA)
            .map(|v| v.as_bytes().to_vec());
        let e = counts.entry((s.code() as i32, status)).or_insert((0, idx));
        e.0 += 1;
    }
    counts
        .values()
        .max_by_key(|(count, _)| *count)
        .map(|(count, idx)| (*count, errors[*idx].1.clone()))
}

/// The index of the peer (of `peers`) a record's private values are placed on first, and
/// its keys asked of first: from SHA-256 of `key` (the record's pseudonym), so that puts and
/// reads of one record meet (docs/adr/0017).
pub fn placement_start(key: &[u8], peers: usize) -> usize {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(key);
    let draw = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    draw as usize % peers.max(1)
}

/// A block header's hash, as the peers compute it (for block 0: the network's identity).
pub use medledger_execution::block::header_hash;
