//! Assembling a gateway: its wallet (an enrollment of role gateway), the peers (through the
//! SDK, which pins their genesis and believes an outcome only with its commit proof), the object store, the
//! upload journal, and the gRPC server behind mutual TLS 1.3.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use medledger_crypto::Role;
use medledger_proto::v1;
use medledger_sdk::peer::PeerSet;
use medledger_sdk::wallet::Wallet;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use crate::service::{Gateway, Journal, Limits, MAX_MESSAGE_BYTES};
use crate::store::StoreConfig;

pub struct GatewayConfig {
    pub wallet: PathBuf,
    /// Any peer, `host:port`: the rest are learnt from the genesis block.
    pub peer: String,
    pub listen: SocketAddr,
    /// The upload journal lives here.
    pub state_dir: PathBuf,
    pub store: StoreConfig,
    pub limits: Limits,
}

/// Runs the gateway until `shutdown` completes; `on_listening` gets the bound address.
/// How often the gateway follows the configuration chain and the revocations: a revoked
/// client is refused, and its transfers cut, within this of its revocation's block.
const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(2);

pub async fn run(
    config: GatewayConfig,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let wallet = Wallet::open(&config.wallet).map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = wallet
        .certificate_identity()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    if identity.role != Role::Gateway {
        bail!(
            "the wallet {} is of role {}; the gateway needs an enrollment of role gateway",
            config.wallet.display(),
            identity.role
        );
    }
    let peers = PeerSet::connect(&wallet, &config.peer)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let store = config.store.open()?;
    let journal = Journal::open(config.state_dir.join("journal")).with_context(|| {
        format!(
            "creating the upload journal under {}",
            config.state_dir.display()
        )
    })?;
    let root = wallet.root().map_err(|e| anyhow::anyhow!("{e}"))?;
    let peers = Arc::new(peers);
    // The configuration in force and the revocations, followed as they change: clients sign
    // expiries under the configuration, and the gateway checks them against it
    // (docs/adr/0010); a certificate the ledger revoked is refused at the next handshake and
    // its open links drop (issue 17 item 5).
    {
        let peers = peers.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(REFRESH_INTERVAL).await;
                peers.refresh(std::time::Duration::ZERO).await;
            }
        });
    }
    // The gateway's certificate is renewed before it ends, for the same keys, and presented
    // from then on to the peers and to its clients (issue 19 item 5).
    let renewal = medledger_sdk::renewal::Renewing::start(
        Wallet::open(&config.wallet).map_err(|e| anyhow::anyhow!("{e}"))?,
        peers.clone(),
    );
    let revocations = peers.revocations().clone();
    let gateway = Arc::new(Gateway::new(
        peers,
        store,
        root.clone(),
        config.limits.clone(),
        journal,
    ));

    let provider = medledger_tls::provider();
    let verifier =
        medledger_tls::EnrollmentClientVerifier::new(root, revocations.clone(), provider.clone());
    // The certificate the gateway presents to its clients is the one it presents to the
    // peers: renewed once for both.
    let server_config = Arc::new(medledger_tls::server_config(
        gateway.peers.certificate(),
        verifier,
        provider,
    )?);
    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let local = listener.local_addr()?;
    let incoming = ReceiverStream::new(medledger_tls::accept_tls(
        listener,
        server_config,
        revocations,
    ));
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<v1::gateway_server::GatewayServer<Gateway>>()
        .await;
    let service = v1::gateway_server::GatewayServer::from_arc(gateway.clone())
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);

    // Settle uploads a previous run left undecided, then keep settling in the background.
    let reconciler = {
        let gateway = gateway.clone();
        tokio::spawn(async move {
            loop {
                let unsettled = gateway.reconcile().await;
                if unsettled > 0 {
                    tracing::warn!(unsettled, "uploads still waiting for the peers");
                }
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
        })
    };
    // The objects of every committed erasure, however it was submitted, and of those that
    // committed while this gateway was down (the queue is on the ledger).
    let deletions = tokio::spawn(crate::deletions::follow(
        gateway.peers.clone(),
        gateway.store.clone(),
    ));
    tracing::info!(%local, store = %config.store, peers = gateway.peers.n(), "gateway serving");
    on_listening(local);
    tonic::transport::Server::builder()
        // Pings on idle links: a link whose client's certificate was revoked or expired ends
        // at the next one (medledger_tls::Guarded).
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .http2_keepalive_timeout(Some(std::time::Duration::from_secs(20)))
        .add_service(health_service)
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    reconciler.abort();
    deletions.abort();
    drop(renewal);
    tracing::info!("stopped");
    Ok(())
}
