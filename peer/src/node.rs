//! Assembling a peer: its identity (an enrollment wallet of role peer), the genesis block,
//! the ledger, the PBFT replica on its driver thread, the replica network, and the gRPC
//! server (client API, replication, health, reflection) behind mutual TLS 1.3.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use medledger_crypto::validate_enrollment_certificate;
use medledger_pbft as pbft;
use medledger_proto::v1;
use medledger_proto::v1::TxStatus;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use crate::config::PeerConfig;
use crate::driver::{Driver, Shared, Status};
use crate::execute::Revocations;
use crate::genesis::Genesis;
use crate::inputs::{INPUT_QUEUE, Inputs};
use crate::ledger::Ledger;
use crate::network::{MAX_REPLICA_MESSAGE_BYTES, Network, ReplicationService};
use crate::pbft_store::PbftStore;
use crate::replica_crypto::ReplicaCrypto;
use crate::service::LedgerService;
use crate::validate::Validator;
use crate::votes::Votes;
use medledger_execution::config::{Configuration, TX_LIFETIME_BOUNDS_MS};

/// Largest client request.
const MAX_CLIENT_MESSAGE_BYTES: usize = 1 << 20;

/// Runs the peer until `shutdown` resolves; then stops accepting calls, lets the driver
/// write its state and returns.
pub async fn run(
    config: PeerConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let provider = medledger_tls::provider();
    let genesis = Arc::new(Genesis::read(&config.genesis)?);
    if !(crate::genesis::OLDEST_RUNNING_FORMAT..=crate::genesis::LEDGER_FORMAT)
        .contains(&genesis.ledger_format())
    {
        bail!(
            "the genesis block is of ledger format {}; this peer runs formats {} to {} (format \
             1 chains still verify with `medledger ledger verify`; a network of this version \
             starts from a new genesis)",
            genesis.ledger_format(),
            crate::genesis::OLDEST_RUNNING_FORMAT,
            crate::genesis::LEDGER_FORMAT
        );
    }
    let mut me = crate::wallet::read_wallet(&config.wallet)?;
    let enrolled = validate_enrollment_certificate(
        &me.certificate_der,
        &genesis.root,
        medledger_tls::now_unix(),
        &std::collections::BTreeSet::new(),
    )
    .context("the wallet's certificate is not valid under the genesis block's CA root")?;
    if enrolled.signing_key != me.signing.verifying_key() {
        bail!("the wallet's key does not match its certificate");
    }
    me.name = enrolled.name.clone();
    // The certificate presented in every handshake: renewed while the peer runs.
    let certificate = medledger_tls::LiveCertificate::new(
        me.certificate_der.clone(),
        me.signing.to_pkcs8_der().to_vec(),
        provider.clone(),
    )?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let ledger = {
        let dir = config.data_dir.join("ledger");
        let genesis = genesis.clone();
        let ledger = tokio::task::spawn_blocking(move || open_or_explain(&dir, &genesis)).await??;
        stop_on_corruption(config.data_dir.join("ledger"));
        ledger
    };
    let ledger = Arc::new(ledger);
    scrub_in_background(ledger.clone());
    // Purged private values leave the ledger's files too, not only its column families.
    ledger
        .compact_purged_in_background()
        .context("starting the compaction of purged private values")?;
    let validator = Arc::new(Validator::new(genesis.clone()));
    let revocations = Revocations::load(&ledger)?;
    let in_force = || {
        validator.configuration_in_force(&crate::execute::LedgerState::new(&ledger, &revocations))
    };
    let member = |c: &Configuration| c.peer_keys.contains(&enrolled.signing_key);
    let mut configuration = in_force()?;
    // A join not confirmed yet (stopped between catching up and the confirmation) is
    // confirmed before anything else, member or not.
    let marker = config.data_dir.join(crate::join::UNCONFIRMED_JOIN);
    let unconfirmed = marker.exists();
    if (unconfirmed || !member(&configuration)) && config.join.is_empty() {
        if unconfirmed {
            bail!(
                "{} joined the network, but no peer named with --join confirmed the block it \
                 reached (it was stopped first); start it again with --join NAME@HOST:PORT (a \
                 peer you trust)",
                enrolled.name
            );
        }
        bail!(
            "{} is not one of the peers of the configuration in force (configuration {}, at \
             block {}); its peers are: {}. A peer the admins are adding starts with --join \
             NAME@HOST:PORT (a peer to catch up from)",
            enrolled.name,
            configuration.sequence,
            ledger.height(),
            configuration
                .peers
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    if unconfirmed || !member(&configuration) {
        let tls = {
            let verifier = medledger_tls::EnrollmentServerVerifier::new(
                genesis.root.clone(),
                revocations.serials.clone(),
                None,
                provider.clone(),
            );
            Arc::new(medledger_tls::client_config(
                certificate.clone(),
                verifier,
                provider.clone(),
            )?)
        };
        if !member(&configuration) {
            // A joining peer: it catches up, checking every block, until the configuration
            // that adds it (docs/adr/0011 §6).
            std::fs::write(&marker, b"")
                .with_context(|| format!("writing {}", marker.display()))?;
            let sources: Vec<String> = config
                .join
                .iter()
                .map(|peer| peer.address.clone())
                .chain(configuration.peers.iter().map(|p| p.address.clone()))
                .collect();
            tracing::info!(
                height = ledger.height(),
                ?sources,
                "not one of the replicas in force: catching up until the peers take this one in"
            );
            crate::join::catch_up(
                &ledger,
                &validator,
                &revocations,
                &enrolled.signing_key,
                &sources,
                tls.clone(),
                revocations.serials.clone(),
            )
            .await?;
        }
        // Certified is not enough across ended epochs (a fork signed with retired keys):
        // a peer the operator named must hold the block reached.
        // Each named peer is dialed so that only the peer enrolled under its name answers
        // for it; one named by address alone is whoever holds a peer certificate there.
        // What is revoked is asked of the CA too, not only read from the blocks fetched: a
        // fork of an ended epoch may leave out the revocation of a retired peer's
        // certificate (or of a key it replaced), which must not confirm anything.
        let confirming = medledger_tls::SharedRevocations::default();
        for serial in ledger.revoked_serials()? {
            confirming.insert(serial);
        }
        match crate::revocation_feed::ca_url(config.ca_url.as_deref(), &config.wallet) {
            Some(url) => {
                let ca = crate::ca_link::CaLink {
                    url,
                    root_der: genesis.root.der().to_vec(),
                    certificate: certificate.clone(),
                    key_pem: me.signing.to_pkcs8_pem(),
                };
                loop {
                    match crate::revocation_feed::signed_serials(&ca, &genesis.root.public_key())
                        .await
                    {
                        Ok(serials) => {
                            tracing::info!(
                                revocations = serials.len(),
                                "the CA's revocations read before a named peer confirms the block reached"
                            );
                            for serial in serials {
                                confirming.insert(serial);
                            }
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "waiting for the CA's revocations before a named peer may confirm the block reached");
                            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                        }
                    }
                }
            }
            None => tracing::warn!(
                "no CA to ask (no --ca-url, none in the wallet): the peer that confirms the \
                 block reached is checked against the revocations of the blocks fetched only"
            ),
        }
        // A named peer that is not in force (removed, or misspelled) can never confirm:
        // said at once, not waited for.
        let reached = in_force()?;
        let names: Vec<&str> = reached.peers.iter().map(|p| p.name.as_str()).collect();
        let (join, left_out) = crate::join::named_in_force(&config.join, &names, ledger.height())?;
        if !left_out.is_empty() {
            tracing::warn!(
                left_out = %left_out.join(", "),
                in_force = %names.join(", "),
                "peers named with --join that are not in the configuration in force are not \
                 asked to confirm the block reached"
            );
        }
        // Once any peer is named, the unnamed ones are sources of blocks only: one of them
        // must not confirm a fork, nor report one, for whichever peer answers there.
        let any_named = join.iter().any(|peer| peer.name.is_some());
        let mut named = Vec::with_capacity(join.len());
        for peer in join {
            let Some(name) = &peer.name else {
                if any_named {
                    continue;
                }
                tracing::warn!(
                    join = %peer,
                    "--join names no peer: whichever enrolled peer answers at this address \
                     can confirm the block reached; give NAME@HOST:PORT to believe only that \
                     peer"
                );
                named.push((peer.clone(), tls.clone()));
                continue;
            };
            let verifier = medledger_tls::EnrollmentServerVerifier::for_peer_named(
                name,
                genesis.root.clone(),
                confirming.clone(),
                provider.clone(),
            );
            let pinned =
                medledger_tls::client_config(certificate.clone(), verifier, provider.clone())?;
            named.push((peer.clone(), Arc::new(pinned)));
        }
        crate::join::confirm_head(&ledger, &named, confirming).await?;
        std::fs::remove_file(&marker).with_context(|| format!("removing {}", marker.display()))?;
        configuration = in_force()?;
    }
    // The replicas in force: the configuration's, in the epoch that started at the last
    // block that changed the peers (docs/adr/0011).
    let base = crate::join::epoch_base(&ledger)?;
    let replica_id = configuration
        .replica_of(&enrolled.signing_key)
        .context("a member has a replica id")?;
    tracing::info!(
        replica = replica_id,
        height = ledger.height(),
        "one of the replicas in force"
    );
    let (height_tx, _) = watch::channel(ledger.height());
    let shared = Arc::new(Shared {
        status: Mutex::new(Status::default()),
        height: height_tx,
        revocations,
        configuration: Arc::new(crate::execute::ConfigurationInForce::new(
            configuration.clone(),
            base,
        )),
        pending_private: crate::private_data::PendingPrivateData::default(),
        reconciliation: Arc::default(),
    });
    // The values this peer acknowledged before it stopped, which blocks still to come may
    // take (docs/adr/0017 §4).
    let pending = ledger.pending_private()?;
    // A peer that caught up by fetching blocks (`join`) committed them without its pending
    // values: those still marked missing are stored now, as the driver would have (each
    // matched its commitment when it was put).
    let own: Vec<_> = pending
        .iter()
        .map(|e| (e.commitment, e.value.clone()))
        .collect();
    let stored = ledger.store_reconciled(&own)?;
    if stored > 0 {
        tracing::info!(
            stored,
            "private values of fetched blocks taken from the pending store"
        );
    }
    shared.pending_private.restore(pending);
    let tls_revocations = shared.revocations.serials.clone();
    let lies = crate::lies::Lies::from_env(&me.name);
    if lies.any() {
        tracing::warn!(
            ?lies,
            "this peer lies ({}, debug builds only: a test)",
            crate::lies::FAULT_LIE
        );
    }
    let votes = Arc::new(Votes::new(
        genesis.clone(),
        ledger.clone(),
        me.signing.clone(),
        configuration.clone(),
        base.seq,
        lies.votes,
    ));
    let withholds = lies.withhold;
    votes.remember_epochs(crate::execute::earlier_epochs(&ledger, &genesis)?);

    // TLS: servers check clients against the root and the ledger's revocations; replicas
    // dial each other pinning the genesis key of the replica dialed.
    let client_verifier = medledger_tls::EnrollmentClientVerifier::new(
        genesis.root.clone(),
        tls_revocations.clone(),
        provider.clone(),
    );
    let server_config = Arc::new(medledger_tls::server_config(
        certificate.clone(),
        client_verifier,
        provider.clone(),
    )?);
    let network = {
        let (certificate, root, revoked, provider) = (
            certificate.clone(),
            genesis.root.clone(),
            tls_revocations.clone(),
            provider.clone(),
        );
        Network::start(
            Some(replica_id),
            &configuration,
            base.seq,
            tls_revocations.clone(),
            certificate.replacements(),
            move |pins| {
                let verifier = medledger_tls::EnrollmentServerVerifier::new(
                    root.clone(),
                    revoked.clone(),
                    Some(pins),
                    provider.clone(),
                );
                Arc::new(
                    medledger_tls::client_config(certificate.clone(), verifier, provider.clone())
                        .expect("our own certificate and key form a valid client config"),
                )
            },
        )
    };

    // The replica, restarted from disk.
    let (store, durable) = PbftStore::load(&ledger)?;
    let crypto = ReplicaCrypto {
        identity: me.signing.clone(),
        configuration: configuration.clone(),
    };
    let height = ledger.height();
    tracing::info!(
        replica = replica_id,
        name = %me.name,
        height,
        view = durable.view,
        network = %hex::encode(genesis.network_id),
        "starting"
    );
    let pbft_config = configuration.replica_config(base)?;
    let (inputs, inputs_rx) = Inputs::channel(INPUT_QUEUE, configuration.peers.len());
    let identity = me.signing.clone();
    let name = me.name.clone();
    let driver_parts = (
        ledger.clone(),
        validator.clone(),
        network.clone(),
        shared.clone(),
        votes.clone(),
    );
    // The replica lives on its own thread (its crypto is not shared across threads). If that
    // thread dies, the peer must not linger half-alive: `died` tells the server, which
    // reports NOT_SERVING and exits non-zero so a supervisor restarts it.
    let (died_tx, mut died) = tokio::sync::oneshot::channel::<()>();
    let driver_thread = std::thread::Builder::new()
        .name("consensus".into())
        .spawn(move || {
            let run = std::panic::AssertUnwindSafe(move || {
                let (ledger, validator, network, shared, votes) = driver_parts;
                let mut replica =
                    pbft::Replica::new(replica_id, pbft_config, Box::new(crypto), durable, height);
                let initial = replica.tick(crate::driver::now_ms());
                Driver::new(replica, store, ledger, validator, network, shared, votes)
                    .with_identity(identity)
                    .with_injected_fault(&name)
                    .run(inputs_rx, initial)
            });
            if std::panic::catch_unwind(run).is_err() {
                let _ = died_tx.send(());
            }
        })?;

    let listen = match config.listen {
        Some(addr) => addr,
        None => listen_address(&configuration.peers[replica_id as usize].address)?,
    };
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    let local = listener.local_addr()?;
    let incoming = ReceiverStream::new(medledger_tls::accept_tls(
        listener,
        server_config,
        tls_revocations.clone(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<v1::ledger_server::LedgerServer<LedgerService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(v1::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let ledger_service = v1::ledger_server::LedgerServer::new(LedgerService {
        genesis: genesis.clone(),
        ledger: ledger.clone(),
        validator: validator.clone(),
        shared: shared.clone(),
        network: network.clone(),
        inputs: inputs.clone(),
        replica: replica_id,
        votes: votes.clone(),
        lies,
        lie_turn: std::sync::atomic::AtomicU64::new(0),
        admission: medledger_tls::admission::Admission::new(crate::service::SUBMIT_LIMITS),
        subscriptions: medledger_tls::admission::Admission::new(crate::service::SUBSCRIBE_LIMITS),
        reader_subscriptions: medledger_tls::admission::Admission::new(
            crate::service::READER_SUBSCRIBE_LIMITS,
        ),
        identity: me.signing.clone(),
        private_admission: medledger_tls::admission::Admission::new(
            crate::service::PUT_PRIVATE_LIMITS,
        ),
        reconcile_admission: medledger_tls::admission::Admission::new(
            crate::service::RECONCILE_LIMITS,
        ),
    })
    .max_decoding_message_size(MAX_CLIENT_MESSAGE_BYTES);
    let prewarm = {
        let (ledger, shared, validator) = (ledger.clone(), shared.clone(), validator.clone());
        let skew = genesis.parameters().max_clock_skew_ms.min(i64::MAX as u64) as i64;
        // The configuration in force with the most lenient limits any configuration may set
        // (a backup that has not yet executed a configuration change judges a forward by the
        // one before), made once per configuration.
        let lenient: Mutex<Option<Arc<Configuration>>> = Mutex::new(None);
        Arc::new(move |envelope: &[u8]| {
            let current = shared.configuration.get();
            let configuration = {
                let mut slot = lenient.lock().unwrap_or_else(|p| p.into_inner());
                match slot.as_ref() {
                    Some(c) if c.hash == current.hash => c.clone(),
                    _ => {
                        let mut c = (*current).clone();
                        c.parameters.max_tx_lifetime_ms = *TX_LIFETIME_BOUNDS_MS.end();
                        c.parameters.max_envelope_bytes = c.parameters.max_batch_bytes;
                        let c = Arc::new(c);
                        *slot = Some(c.clone());
                        c
                    }
                }
            };
            let facts = crate::execute::CommittedFacts {
                ledger: &ledger,
                revocations: &shared.revocations,
                configuration,
            };
            // Execution decides for good; this fills the caches and screens forwards: a forward
            // is dropped only for what no clock or ledger height can change (a backup validated
            // it against its own; dropping it for expiry or revocation here would leave it
            // pending at that backup, which would then suspect a correct primary). It checks
            // at the latest time a correct backup's clock may show, so that an expiry the
            // backup accepted is never "too far ahead" here.
            let latest = (crate::driver::now_ms() as i64).saturating_add(skew);
            match validator.check(envelope, latest, &facts) {
                // Words a client should have sealed are refused before ordering by every
                // correct peer (`check_before_ordering`): a forward of them comes from a
                // lying replica, and the words would stay in the block for good.
                Ok(crate::validate::Checked::Transaction(valid)) => {
                    medledger_chaincode::check_before_ordering(
                        &valid.transaction.function,
                        &valid.transaction.args,
                        medledger_execution::genesis::private_keys(validator.ledger_format()),
                    )
                    .is_ok()
                }
                Ok(_) => true,
                Err(refusal) => !matches!(
                    refusal.status,
                    TxStatus::BadEnvelope
                        | TxStatus::BadSignature
                        | TxStatus::WrongNetwork
                        | TxStatus::TooLarge
                        | TxStatus::UnknownFunction
                ),
            }
        })
    };
    let replication = v1::replication_server::ReplicationServer::new(ReplicationService {
        configuration: shared.configuration.clone(),
        root: genesis.root.clone(),
        inputs: inputs.clone(),
        prewarm,
        open_streams: std::sync::Mutex::new(std::collections::HashMap::new()),
        votes: votes.clone(),
    })
    .max_decoding_message_size(MAX_REPLICA_MESSAGE_BYTES);
    // Revocations at the CA reach the ledger without an operator step (issue 19 item 1),
    // and the peer renews its own certificate there (issue 19 item 5).
    let ca_tasks = match crate::revocation_feed::ca_url(config.ca_url.as_deref(), &config.wallet) {
        Some(url) => {
            tracing::info!(ca_url = %url, "following the CA's revocations; renewing this peer's certificate there");
            let ca = Arc::new(crate::ca_link::CaLink {
                url,
                root_der: genesis.root.der().to_vec(),
                certificate: certificate.clone(),
                key_pem: me.signing.to_pkcs8_pem(),
            });
            let feed = crate::revocation_feed::RevocationFeed {
                ca: ca.clone(),
                ledger: ledger.clone(),
                validator: validator.clone(),
                shared: shared.clone(),
                inputs: inputs.clone(),
            };
            let renewal = crate::renewal::Renewal {
                ca,
                root: genesis.root.clone(),
                wallet: config.wallet.clone(),
                signing: me.signing.clone(),
            };
            vec![tokio::spawn(feed.run()), tokio::spawn(renewal.run())]
        }
        None => {
            tracing::warn!(
                "no CA address (ca_url, or the wallet's wallet.json): revocations reach the \
                 ledger only through other peers or `medledger admin sync-revocations`, and \
                 this peer presents the certificate it started with until it restarts"
            );
            Vec::new()
        }
    };
    // Committed private values this peer lacks come from the other replicas
    // (docs/adr/0017 §7). A peer lying as `withhold` keeps none, and fetches none either.
    let reconciler = match config.reconcile_every {
        Some(every) if !withholds => Some(tokio::spawn(
            crate::reconcile::Reconciler {
                ledger: ledger.clone(),
                network: network.clone(),
                revoked: tls_revocations.clone(),
                every,
                progress: shared.reconciliation.clone(),
            }
            .run(),
        )),
        _ => None,
    };
    // A replica the others refuse reads the blocks it lacks from them (a change of the peers
    // it missed).
    let left_behind = tokio::spawn(
        crate::left_behind::LeftBehind {
            ledger: ledger.clone(),
            network: network.clone(),
            inputs: inputs.clone(),
            configuration: shared.configuration.clone(),
            revoked: tls_revocations.clone(),
        }
        .run(),
    );
    if let Some(addr) = config.metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .with_context(|| format!("serving metrics on {addr}"))?;
        tracing::info!(%addr, "Prometheus metrics at /metrics");
    }
    on_listening(local);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            // Pings on idle links: a link whose client's certificate was revoked or expired
            // ends at the next one (medledger_tls::Guarded).
            .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
            .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
            .concurrency_limit_per_connection(1024)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(ledger_service)
            .add_service(replication)
            .serve_with_incoming_shutdown(incoming, async {
                let _ = stopped.await;
            }),
    );
    tokio::select! {
        _ = shutdown => {}
        Ok(()) = &mut died => consensus_died(&health).await,
    }
    tracing::info!("shutting down: no new calls; the ledger is flushed before exit");
    for task in ca_tasks {
        task.abort();
    }
    left_behind.abort();
    if let Some(task) = reconciler {
        task.abort();
    }
    let _ = stop.send(());
    // Replica streams and subscriptions never end by themselves: give calls in flight a
    // moment, then stop regardless.
    if let Ok(Ok(Err(e))) = tokio::time::timeout(std::time::Duration::from_secs(3), server).await {
        tracing::warn!(error = %e, "server ended with an error");
    }
    inputs.shutdown();
    let _ = tokio::task::spawn_blocking(move || driver_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long a peer whose consensus thread died keeps answering NOT_SERVING before it exits.
const DYING_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// The consensus thread died (a bug: every input it takes is checked). Health answers
/// NOT_SERVING for [`DYING_GRACE`], so load balancers and `network status` see it, then the
/// process exits with status 70 (EX_SOFTWARE) for its supervisor to restart it; the PBFT
/// state and the ledger on disk are as the last synced write left them.
async fn consensus_died(health: &tonic_health::server::HealthReporter) -> ! {
    tracing::error!("the consensus thread died; this peer stops serving and exits");
    eprintln!("medledger-peer: fatal: the consensus thread died");
    health
        .set_not_serving::<v1::ledger_server::LedgerServer<LedgerService>>()
        .await;
    health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;
    tokio::time::sleep(DYING_GRACE).await;
    std::process::exit(70);
}

/// Where to listen when the configuration does not say: the port of this peer's genesis
/// address, on that address if it is an IP, on every interface otherwise.
fn listen_address(address: &str) -> anyhow::Result<SocketAddr> {
    if let Ok(addr) = address.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let port = address
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok())
        .with_context(|| format!("the genesis address {address:?} has no port"))?;
    Ok(SocketAddr::from(([0, 0, 0, 0], port)))
}

/// Opens the ledger in `dir`. One found corrupt (now, or by an earlier run: its marker) is
/// neither served nor signed from: the peer stops, saying so and how to recover (issue 18
/// item 5): move the ledger aside and start the peer again; it catches up from the others
/// by state transfer. It does not do so by itself: a
/// peer started empty has forgotten its PBFT votes (until it has caught up it counts as the
/// one faulty peer), and peers setting their ledgers aside at once, after an upgrade that
/// reads them wrongly, would start a new chain (red team, issue 18).
fn open_or_explain(
    dir: &std::path::Path,
    genesis: &crate::genesis::Genesis,
) -> anyhow::Result<Ledger> {
    match Ledger::open(dir, genesis) {
        Err(corrupt @ crate::ledger::LedgerError::Corrupt { .. }) => {
            metrics::counter!("medledger_ledger_corrupt_total").increment(1);
            bail!("{}", corruption_advice(dir, &corrupt))
        }
        other => Ok(other?),
    }
}

/// How fast the background scrub reads the ledger (bytes a second): a 100 GiB ledger in
/// about 35 minutes, leaving the disk to the peer's own work.
const SCRUB_BYTES_PER_SECOND: u64 = 50 << 20;
/// How often the whole ledger is scrubbed again.
const SCRUB_EVERY: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Reads the whole ledger with checksums verified ([`Ledger::scrub`]) when the peer starts
/// and once a day, paced, on a thread of its own. Damage found stops the peer through the
/// corruption hook ([`stop_on_corruption`]), within seconds of starting on a small ledger:
/// a flipped bit in a table nobody reads is found before a peer catching up asks for it.
fn scrub_in_background(ledger: Arc<Ledger>) {
    let spawned = std::thread::Builder::new()
        .name("ledger-scrub".into())
        .spawn(move || {
            loop {
                let started = std::time::Instant::now();
                match ledger.scrub(Some(SCRUB_BYTES_PER_SECOND)) {
                    Ok(()) => tracing::info!(
                        took_ms = started.elapsed().as_millis() as u64,
                        "the whole ledger was read back with its checksums verified"
                    ),
                    // Corruption has stopped the peer by now (the hook); other errors are
                    // the disk's, and the next scrub tries again.
                    Err(e) => tracing::warn!("the ledger scrub stopped: {e}"),
                }
                std::thread::sleep(SCRUB_EVERY);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("no ledger scrub: {e}");
    }
}

/// What an operator reads when this peer's ledger in `dir` is found corrupt.
fn corruption_advice(dir: &std::path::Path, corrupt: &crate::ledger::LedgerError) -> String {
    let found = match corrupt {
        crate::ledger::LedgerError::Corrupt { what, why } => format!("{what}: {why}"),
        other => other.to_string(),
    };
    format!(
        "this peer's ledger is corrupt ({found}); it serves and signs nothing from it. Check \
         the disk, then move \
         the ledger aside (`mv {dir} {dir}.corrupt`) and start the peer again: it catches up \
         from the other peers. Do this on one peer at a time, and only while the others commit",
        dir = dir.display()
    )
}

/// Makes corruption found while running stop the peer for good (until the operator moves
/// the ledger aside): it writes [`crate::ledger::CORRUPTION_MARKER`] into `dir`, synced, so
/// that the next start refuses the ledger even if the damage lies where opening does not
/// read, says so, and exits. A peer that went on would serve the damaged data, or stop at
/// the next read of it and start again in a loop.
fn stop_on_corruption(dir: std::path::PathBuf) {
    crate::ledger::on_corruption(move |corrupt| {
        metrics::counter!("medledger_ledger_corrupt_total").increment(1);
        let marker = dir.join(crate::ledger::CORRUPTION_MARKER);
        let written = std::fs::File::create(&marker)
            .and_then(|mut file| {
                use std::io::Write;
                writeln!(file, "{corrupt}")?;
                file.sync_all()
            })
            // The marker's name too must survive a crash.
            .and_then(|()| std::fs::File::open(&dir)?.sync_all());
        let advice = corruption_advice(&dir, corrupt);
        if let Err(e) = written {
            tracing::error!("cannot write {}: {e}", marker.display());
        }
        tracing::error!("{advice}; stopping the peer");
        eprintln!("medledger-peer: fatal: {advice}");
        std::process::exit(70);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    /// The fuzz fixtures' genesis block.
    fn fixture_genesis() -> crate::genesis::Genesis {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/genesis.pb");
        let block =
            medledger_proto::v1::Block::decode(std::fs::read(path).unwrap().as_slice()).unwrap();
        crate::genesis::Genesis::from_block(block).unwrap()
    }

    /// Issue 18 item 5: one flipped byte in the middle of a peer's RocksDB write-ahead log is
    /// corruption, not the end of the log. Before, the peer replayed the log up to the byte,
    /// dropped the rest and came back 329 blocks lower without a word; now it refuses to start,
    /// saying how to recover.
    #[test]
    fn a_corrupt_ledger_is_reported_not_served() {
        let genesis = fixture_genesis();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ledger");
        {
            let ledger = Ledger::open(&dir, &genesis).unwrap();
            for i in 0u64..2_000 {
                let key = [b"test/".as_slice(), &i.to_be_bytes()].concat();
                ledger
                    .write_pbft(vec![(key, vec![7; 512])], Vec::new())
                    .unwrap();
            }
        }
        let log = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "log"))
            .expect("a write-ahead log");
        let mut bytes = std::fs::read(&log).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&log, bytes).unwrap();

        match Ledger::open(&dir, &genesis) {
            Err(crate::ledger::LedgerError::Corrupt { what, .. }) => assert_eq!(what, "rocksdb"),
            Err(other) => panic!("not reported as corruption: {other}"),
            Ok(_) => panic!("a corrupt log opened"),
        }
        let error = open_or_explain(&dir, &genesis).err().unwrap().to_string();
        assert!(error.contains("ledger is corrupt"), "{error}");
        assert!(error.contains("move the ledger aside"), "{error}");
    }

    /// A stored configuration link of the wrong length is corruption: read as absent, the
    /// epochs read back at start ended there and dropped a real one without a word.
    #[test]
    fn a_configuration_link_of_the_wrong_length_is_corruption() {
        let genesis = fixture_genesis();
        let root = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&root.path().join("ledger"), &genesis).unwrap();
        assert!(ledger.config_link(1).unwrap().is_none());
        let key = [b"config/".as_slice(), &1u64.to_be_bytes()].concat();
        ledger
            .put_and_flush(crate::ledger::CF_META, vec![(key, vec![7; 31])])
            .unwrap();
        match ledger.config_link(1) {
            Err(crate::ledger::LedgerError::Corrupt { what, why }) => {
                assert_eq!(what, "configuration links");
                assert!(why.contains("31 bytes"), "{why}");
            }
            other => panic!("not reported as corruption: {other:?}"),
        }
        assert!(crate::execute::earlier_epochs(&ledger, &genesis).is_err());
    }

    /// The configuration links must end with the epoch the ledger says is in force: an
    /// epoch base with no link that changed the replicas there is corruption, not "the
    /// genesis's replicas still".
    #[test]
    fn epochs_that_do_not_end_at_the_epoch_base_are_corruption() {
        let genesis = fixture_genesis();
        let root = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&root.path().join("ledger"), &genesis).unwrap();
        assert!(
            crate::execute::earlier_epochs(&ledger, &genesis)
                .unwrap()
                .is_empty()
        );
        ledger
            .put_and_flush(
                crate::ledger::CF_META,
                vec![(b"epoch_base".to_vec(), 5u64.to_be_bytes().to_vec())],
            )
            .unwrap();
        match crate::execute::earlier_epochs(&ledger, &genesis) {
            Err(crate::ledger::LedgerError::Corrupt { what, why }) => {
                assert_eq!(what, "configuration links");
                assert!(why.contains("after block 5"), "{why}");
            }
            other => panic!("not reported as corruption: {other:?}"),
        }
    }

    /// Issue 18: one bit flipped anywhere in a table file (data, index, filter, properties
    /// or footer) is found when the ledger opens or by its scrub, not when that data is next
    /// read: before, such a peer started, served, and stopped at the first read of the
    /// damaged block (or never, if no one asked for it, and `ledger verify` failed later).
    #[test]
    fn a_flipped_bit_anywhere_in_a_table_file_is_found_by_the_scrub() {
        let genesis = fixture_genesis();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ledger");
        {
            let ledger = Ledger::open(&dir, &genesis).unwrap();
            // Values that do not compress, in a column family with a Bloom filter and in one
            // without.
            let mut value = [0u8; 32];
            for cf in [crate::ledger::CF_TX_INDEX, crate::ledger::CF_HISTORY] {
                let puts = (0u64..4_000)
                    .map(|i| {
                        let mut bytes = Vec::with_capacity(256);
                        for _ in 0..8 {
                            value = <sha2::Sha256 as sha2::Digest>::digest(value).into();
                            bytes.extend_from_slice(&value);
                        }
                        ([b"test/".as_slice(), &i.to_be_bytes()].concat(), bytes)
                    })
                    .collect();
                ledger.put_and_flush(cf, puts).unwrap();
            }
        }
        let tables: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "sst"))
            .collect();
        assert!(tables.len() >= 2, "tables: {tables:?}");
        let mut tried = 0;
        for table in &tables {
            let len = std::fs::metadata(table).unwrap().len() as usize;
            let step = (len / 40).max(1);
            for at in (0..len).step_by(step).chain([len - 1]) {
                let copy = root.path().join(format!("copy-{tried}"));
                std::fs::create_dir(&copy).unwrap();
                for entry in std::fs::read_dir(&dir).unwrap() {
                    let from = entry.unwrap().path();
                    std::fs::copy(&from, copy.join(from.file_name().unwrap())).unwrap();
                }
                let damaged = copy.join(table.file_name().unwrap());
                let mut bytes = std::fs::read(&damaged).unwrap();
                bytes[at] ^= 0x10;
                std::fs::write(&damaged, bytes).unwrap();
                match Ledger::open(&copy, &genesis).and_then(|l| l.scrub(None)) {
                    Err(crate::ledger::LedgerError::Corrupt { .. }) => {}
                    Err(other) => {
                        panic!("byte {at} of {len} in {table:?}: not corruption: {other}")
                    }
                    Ok(()) => panic!("byte {at} of {len} in {table:?}: a damaged table passed"),
                }
                std::fs::remove_dir_all(&copy).unwrap();
                tried += 1;
            }
        }
        assert!(tried >= 80, "{tried} flips tried");
    }

    /// A peer that found its ledger corrupt while running left the marker: the ledger is
    /// refused at the next start, with the advice, until it is moved aside.
    #[test]
    fn a_ledger_marked_corrupt_while_running_is_refused() {
        let genesis = fixture_genesis();
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("ledger");
        drop(Ledger::open(&dir, &genesis).unwrap());
        std::fs::write(
            dir.join(crate::ledger::CORRUPTION_MARKER),
            "the ledger is corrupt (rocksdb): Corruption: block checksum mismatch\n",
        )
        .unwrap();
        let error = open_or_explain(&dir, &genesis).err().unwrap().to_string();
        assert!(error.contains("block checksum mismatch"), "{error}");
        assert!(error.contains("move the ledger aside"), "{error}");
        std::fs::remove_file(dir.join(crate::ledger::CORRUPTION_MARKER)).unwrap();
        Ledger::open(&dir, &genesis).unwrap();
    }
}
