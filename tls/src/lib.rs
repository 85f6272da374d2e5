//! # medledger-tls
//!
//! Mutual TLS 1.3 between medledger processes. Every certificate is an enrollment certificate
//! from the network's membership CA (Ed25519), and both sides check each other with the same
//! rules the ledger applies to transactions: it chains to the root, it is within its validity
//! period, it is not revoked, and it carries the expected role. Enrollment certificates name
//! people and peers, not hosts, so a client authenticates a peer by role — and, between
//! replicas, by the exact key the genesis block gives that replica — never by host name.
//!
//! It imports `medledger-crypto` and nothing else of ours. Main items:
//! - [`EnrollmentServerVerifier`]: a client's check of the server (role peer, optional pins).
//! - [`EnrollmentClientVerifier`]: a server's check of its clients (any role, mandatory).
//! - [`server_config`], [`client_config`], [`accept_tls`], [`connect`].
//! - [`LiveCertificate`]: this process's certificate, renewed while it runs.
//! - [`Guarded`]: every link, both ways, ends when the other side's certificate is revoked
//!   or expires.
//! - [`admission`]: per-identity rate and in-flight limits for the servers' callers.

pub mod admission;
mod guard;
mod live;

pub use guard::Guarded;
pub use live::LiveCertificate;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use medledger_crypto::{
    CertificateError, EnrolledIdentity, Role, RootCertificate, validate_enrollment_certificate,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError as TlsCertError, ClientConfig, DigitallySignedStruct, DistinguishedName,
    ServerConfig, SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::server::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// A handshake that takes longer than this is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Most TLS handshakes in progress at once; more connections wait in the kernel's backlog.
const MAX_CONCURRENT_HANDSHAKES: usize = 256;
/// How long a client waits for TCP and TLS to a server.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The process-wide rustls provider (aws-lc-rs). Installing it twice is harmless.
pub fn provider() -> Arc<CryptoProvider> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Serial numbers of revoked certificates, shared with whoever learns of revocations (the
/// ledger, for a peer; the ledger's CA-signed records, for a client) so that the next
/// handshake sees them, and every [`Guarded`] link ends at its next I/O.
#[derive(Debug, Default, Clone)]
pub struct SharedRevocations(Arc<Revoked>);

#[derive(Debug, Default)]
struct Revoked {
    serials: RwLock<BTreeSet<Vec<u8>>>,
    /// Bumped by every insertion of a new serial.
    generation: AtomicU64,
}

impl SharedRevocations {
    pub fn insert(&self, serial: Vec<u8>) {
        let added = self
            .0
            .serials
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(serial);
        if added {
            self.0.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    pub fn contains(&self, serial: &[u8]) -> bool {
        self.0
            .serials
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(serial)
    }

    /// How many serials were added so far: a watcher looks the set up again only when it
    /// moved.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(Ordering::SeqCst)
    }
}

impl medledger_crypto::RevocationSet for SharedRevocations {
    fn is_revoked(&self, serial: &[u8]) -> bool {
        self.contains(serial)
    }
}

fn unix_seconds(now: UnixTime) -> i64 {
    i64::try_from(now.as_secs()).unwrap_or(i64::MAX)
}

/// Wall-clock Unix seconds (for checks outside a handshake).
pub fn now_unix() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Maps our certificate errors to the TLS alerts a client can understand.
fn tls_error(e: CertificateError) -> rustls::Error {
    let alert = match e {
        CertificateError::Expired { .. } => TlsCertError::Expired,
        CertificateError::NotYetValid { .. } => TlsCertError::NotValidYet,
        CertificateError::Revoked { .. } => TlsCertError::Revoked,
        CertificateError::NotIssuedByRoot => TlsCertError::UnknownIssuer,
        CertificateError::BadSignature => TlsCertError::BadSignature,
        other => TlsCertError::Other(rustls::OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(alert)
}

/// Checks one enrollment certificate the way both verifiers do.
#[derive(Debug, Clone)]
struct EnrollmentCheck {
    root: RootCertificate,
    revoked: SharedRevocations,
    provider: Arc<CryptoProvider>,
}

impl EnrollmentCheck {
    fn check(&self, der: &[u8], now: UnixTime) -> Result<EnrolledIdentity, rustls::Error> {
        validate_enrollment_certificate(der, &self.root, unix_seconds(now), &self.revoked)
            .map_err(tls_error)
    }

    fn verify13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
}

/// The handshake-signature methods both verifiers share: TLS 1.3 only, Ed25519 only (every
/// enrollment key is Ed25519), checked through the verifier's `check`.
macro_rules! tls13_ed25519_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::PeerIncompatible(
                rustls::PeerIncompatible::Tls13RequiredForQuic,
            ))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.check.verify13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            vec![SignatureScheme::ED25519]
        }
    };
}

/// A client's check of a medledger server: an enrollment certificate of one role (peer, or
/// gateway for the storage gateway) from this
/// network's root, not revoked, and — when pins are given — carrying one of the pinned
/// Ed25519 keys (a replica dialing replica j pins j's key from the genesis block).
#[derive(Debug, Clone)]
pub struct EnrollmentServerVerifier {
    check: EnrollmentCheck,
    pinned_keys: Option<BTreeSet<[u8; 32]>>,
    /// When set, the server's certificate must carry exactly this enrolled name (a peer
    /// named by its operator as `NAME@HOST:PORT`: the CA vouches for who answers there).
    pinned_name: Option<String>,
    role: Role,
}

impl EnrollmentServerVerifier {
    /// Accepts peers.
    pub fn new(
        root: RootCertificate,
        revoked: SharedRevocations,
        pinned_keys: Option<BTreeSet<[u8; 32]>>,
        provider: Arc<CryptoProvider>,
    ) -> Arc<Self> {
        Self::for_role(Role::Peer, root, revoked, pinned_keys, provider)
    }

    /// Accepts servers enrolled with `role`.
    pub fn for_role(
        role: Role,
        root: RootCertificate,
        revoked: SharedRevocations,
        pinned_keys: Option<BTreeSet<[u8; 32]>>,
        provider: Arc<CryptoProvider>,
    ) -> Arc<Self> {
        Arc::new(EnrollmentServerVerifier {
            check: EnrollmentCheck {
                root,
                revoked,
                provider,
            },
            pinned_keys,
            pinned_name: None,
            role,
        })
    }

    /// Accepts only the peer enrolled as `name` (any of its certificates from this root that
    /// is live and not revoked): a peer its operator named, whose answer is trusted because
    /// of who gives it, not of the address it comes from.
    pub fn for_peer_named(
        name: &str,
        root: RootCertificate,
        revoked: SharedRevocations,
        provider: Arc<CryptoProvider>,
    ) -> Arc<Self> {
        let mut verifier =
            Arc::unwrap_or_clone(Self::for_role(Role::Peer, root, revoked, None, provider));
        verifier.pinned_name = Some(name.to_owned());
        Arc::new(verifier)
    }
}

impl ServerCertVerifier for EnrollmentServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let identity = self.check.check(end_entity, now)?;
        if identity.role != self.role {
            return Err(rustls::Error::InvalidCertificate(
                TlsCertError::NotValidForName,
            ));
        }
        if let Some(pins) = &self.pinned_keys
            && !pins.contains(&identity.signing_key.to_bytes())
        {
            return Err(rustls::Error::InvalidCertificate(
                TlsCertError::NotValidForName,
            ));
        }
        if let Some(name) = &self.pinned_name
            && identity.name != *name
        {
            return Err(rustls::Error::InvalidCertificate(
                TlsCertError::NotValidForName,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    tls13_ed25519_signatures!();
}

/// A server's check of its clients: a certificate is mandatory, and it must be a valid,
/// unrevoked enrollment certificate of this network (any role; services check roles).
#[derive(Debug)]
pub struct EnrollmentClientVerifier {
    check: EnrollmentCheck,
}

impl EnrollmentClientVerifier {
    pub fn new(
        root: RootCertificate,
        revoked: SharedRevocations,
        provider: Arc<CryptoProvider>,
    ) -> Arc<Self> {
        Arc::new(EnrollmentClientVerifier {
            check: EnrollmentCheck {
                root,
                revoked,
                provider,
            },
        })
    }
}

impl ClientCertVerifier for EnrollmentClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.check.check(end_entity, now)?;
        Ok(ClientCertVerified::assertion())
    }

    tls13_ed25519_signatures!();
}

/// TLS 1.3 only, ALPN h2, this process's enrollment certificate (as it is at each
/// handshake: [`LiveCertificate`]), mandatory client auth.
pub fn server_config(
    certificate: Arc<LiveCertificate>,
    verifier: Arc<EnrollmentClientVerifier>,
    provider: Arc<CryptoProvider>,
) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    no_resumption_server(&mut config);
    Ok(config)
}

/// No TLS session resumption, as server: a resumed handshake checks no certificate (RFC 8446
/// §2.2), so it would carry a revoked, expired or renewed-away certificate past every check
/// and every [`Guarded`] link.
pub fn no_resumption_server(config: &mut ServerConfig) {
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
}

/// No TLS session resumption, as client (see [`no_resumption_server`]).
pub fn no_resumption_client(config: &mut ClientConfig) {
    config.resumption = rustls::client::Resumption::disabled();
}

/// TLS 1.3 only, ALPN h2, this process's enrollment certificate (as it is at each
/// handshake: [`LiveCertificate`]) as client certificate.
pub fn client_config(
    certificate: Arc<LiveCertificate>,
    verifier: Arc<EnrollmentServerVerifier>,
    provider: Arc<CryptoProvider>,
) -> Result<ClientConfig, rustls::Error> {
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    no_resumption_client(&mut config);
    Ok(config)
}

/// Accepts TCP connections, performs TLS handshakes (bounded in number and time) and yields
/// the established streams, each [`Guarded`] by the client's certificate against `revoked`
/// (it ends when that certificate is revoked or expires). Refused handshakes are logged with
/// their reason and dropped.
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    revoked: SharedRevocations,
) -> mpsc::Receiver<Result<Guarded<TlsStream<TcpStream>>, std::io::Error>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = TlsAcceptor::from(config);
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let Ok(permit) = permits.clone().acquire_owned().await else {
                return;
            };
            let (tcp, remote) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            let revoked = revoked.clone();
            tokio::spawn(async move {
                let _permit = permit;
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let certificate = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| c.as_ref().to_vec());
                        let guarded = Guarded::new(stream, certificate.as_deref(), revoked);
                        let _ = tx.send(Ok(guarded)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%remote, reason = %e, "TLS handshake refused"),
                    Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
                }
            });
        }
    });
    rx
}

// The connector's type is unnameable (an async closure); spelling its bounds is the price.
#[allow(clippy::type_complexity)]
fn endpoint_and_connector(
    address: &str,
    config: Arc<ClientConfig>,
    revoked: SharedRevocations,
) -> Result<
    (
        tonic::transport::Endpoint,
        impl tower::Service<
            tonic::transport::Uri,
            Response = hyper_util::rt::TokioIo<Guarded<tokio_rustls::client::TlsStream<TcpStream>>>,
            Error = std::io::Error,
            Future = impl Send,
        > + Clone
        + Send
        + 'static,
    ),
    String,
> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .map_err(|e| format!("bad address {address:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(20));
    let connector = TlsConnector::from(config);
    let service = tower::service_fn(move |uri: tonic::transport::Uri| {
        let connector = connector.clone();
        let revoked = revoked.clone();
        async move {
            let host = uri
                .host()
                .unwrap_or("127.0.0.1")
                .trim_matches(['[', ']'])
                .to_string();
            let port = uri.port_u16().unwrap_or(443);
            let tcp =
                tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                    .await
                    .map_err(|_| {
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                    })??;
            tcp.set_nodelay(true)?;
            // The name is not checked (see the verifier); it only fills the SNI field.
            let name = ServerName::try_from("medledger-peer")
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let tls = connector.connect(name, tcp).await?;
            let certificate = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec());
            let guarded = Guarded::new(tls, certificate.as_deref(), revoked);
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(guarded))
        }
    });
    Ok((endpoint, service))
}

/// A gRPC channel to `address` (`host:port`) over our TLS, connected now. The server's
/// certificate is judged by the config's verifier, not by host name, and each connection is
/// [`Guarded`] by it against `revoked` (pass the set the verifier checks).
pub async fn connect(
    address: &str,
    config: Arc<ClientConfig>,
    revoked: SharedRevocations,
) -> Result<tonic::transport::Channel, String> {
    let (endpoint, connector) = endpoint_and_connector(address, config, revoked)?;
    endpoint
        .connect_with_connector(connector)
        .await
        .map_err(|e| {
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        })
}

/// Like [`connect`], and also the notAfter (Unix seconds) of the certificate the server
/// presented (`None` if it could not be read): a long-lived link can be made again before
/// that certificate ends and the link with it.
///
/// # Errors
/// As [`connect`].
pub async fn connect_watching(
    address: &str,
    config: Arc<ClientConfig>,
    revoked: SharedRevocations,
) -> Result<(tonic::transport::Channel, Option<i64>), String> {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let (endpoint, connector) = endpoint_and_connector(address, config, revoked)?;
    let watching = {
        let seen = seen.clone();
        tower::ServiceExt::map_response(connector, move |io| {
            let not_after = io.inner().not_after();
            *seen.lock().unwrap_or_else(|p| p.into_inner()) = not_after;
            io
        })
    };
    let channel = endpoint
        .connect_with_connector(watching)
        .await
        .map_err(|e| e.to_string())?;
    let not_after = *seen.lock().unwrap_or_else(|p| p.into_inner());
    Ok((channel, not_after))
}

/// Like [`connect_lazy`], and also where the notAfter (Unix seconds) of the certificate the
/// server presented at the latest connection is kept (`i64::MAX` until one is made): a
/// client can make the link again before that certificate ends and cuts the connection.
///
/// # Errors
/// As [`connect_lazy`].
pub fn connect_lazy_watching(
    address: &str,
    config: Arc<ClientConfig>,
    revoked: SharedRevocations,
) -> Result<(tonic::transport::Channel, Arc<AtomicI64>), String> {
    let end = Arc::new(AtomicI64::new(i64::MAX));
    let (endpoint, connector) = endpoint_and_connector(address, config, revoked)?;
    let watching = {
        let end = end.clone();
        tower::ServiceExt::map_response(connector, move |io| {
            end.store(
                io.inner().not_after().unwrap_or(i64::MAX),
                Ordering::Relaxed,
            );
            io
        })
    };
    Ok((endpoint.connect_with_connector_lazy(watching), end))
}

/// Like [`connect`], but connects on first use (and reconnects after failures).
pub fn connect_lazy(
    address: &str,
    config: Arc<ClientConfig>,
    revoked: SharedRevocations,
) -> Result<tonic::transport::Channel, String> {
    let (endpoint, connector) = endpoint_and_connector(address, config, revoked)?;
    Ok(endpoint.connect_with_connector_lazy(connector))
}

/// The identity a server saw at the handshake, from tonic's TLS connect info.
pub fn peer_certificate<T>(request: &tonic::Request<T>) -> Option<Vec<u8>> {
    request
        .peer_certs()
        .and_then(|certs| certs.first().map(|c| c.as_ref().to_vec()))
}
