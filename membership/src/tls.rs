//! The CA's TLS 1.3 endpoint.
//!
//! tonic's own TLS settings have no CRL hook, so the CA builds its rustls `ServerConfig` itself
//! and accepts connections through `tokio_rustls`. Client certificates are optional at the
//! handshake (Enroll and GetCaInfo come from clients that have none yet) but a certificate that
//! is presented must chain to the root, be within its validity period and not be on the CRL;
//! otherwise the handshake fails with the matching TLS alert (`certificate_revoked`,
//! `certificate_expired`, `unknown_ca`). The verifier is swapped for a new one whenever the
//! CRL changes, so a revocation takes effect at the next handshake.

use std::sync::{Arc, RwLock};

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};

use crate::files::{CaDir, read_private};

/// A client-certificate verifier whose CRL can be replaced while the server runs.
#[derive(Debug)]
pub struct ReloadableClientVerifier {
    current: RwLock<Arc<dyn ClientCertVerifier>>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    hints: Vec<DistinguishedName>,
}

impl ReloadableClientVerifier {
    pub fn new(
        root_der: &[u8],
        crl_der: &[u8],
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let mut roots = RootCertStore::empty();
        roots.add(CertificateDer::from(root_der.to_vec()))?;
        let roots = Arc::new(roots);
        let current = Self::build(&roots, &provider, crl_der)?;
        let hints = current.root_hint_subjects().to_vec();
        Ok(Arc::new(ReloadableClientVerifier {
            current: RwLock::new(current),
            roots,
            provider,
            hints,
        }))
    }

    /// Installs a new CRL; later handshakes are checked against it.
    pub fn reload(&self, crl_der: &[u8]) -> Result<(), rustls::Error> {
        let verifier = Self::build(&self.roots, &self.provider, crl_der)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = verifier;
        Ok(())
    }

    fn build(
        roots: &Arc<RootCertStore>,
        provider: &Arc<CryptoProvider>,
        crl_der: &[u8],
    ) -> Result<Arc<dyn ClientCertVerifier>, rustls::Error> {
        WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .with_crls([CertificateRevocationListDer::from(crl_der.to_vec())])
            .allow_unauthenticated()
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))
    }

    fn get(&self) -> Arc<dyn ClientCertVerifier> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl ClientCertVerifier for ReloadableClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.get()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.get().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.get().supported_verify_schemes()
    }
}

/// The CA's TLS server certificate and key, replaceable while the server runs: `medledger-ca
/// tls-renew` writes new files and [`ReloadableServerCert::reload`] takes them in, so a new
/// certificate (new names, a later end) needs no restart and no new root.
#[derive(Debug)]
pub struct ReloadableServerCert {
    dir: CaDir,
    provider: Arc<CryptoProvider>,
    current: RwLock<Arc<CertifiedKey>>,
}

impl ReloadableServerCert {
    pub fn load(dir: &CaDir, provider: Arc<CryptoProvider>) -> anyhow::Result<Arc<Self>> {
        let current = RwLock::new(Self::read(dir, &provider)?);
        Ok(Arc::new(ReloadableServerCert {
            dir: dir.clone(),
            provider,
            current,
        }))
    }

    /// Reads the certificate and key files again; later handshakes present them. On error
    /// the certificate in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let loaded = Self::read(&self.dir, &self.provider)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = loaded;
        Ok(())
    }

    /// The certificate presented now (DER).
    pub fn certificate_der(&self) -> Vec<u8> {
        let current = self.current.read().unwrap_or_else(|p| p.into_inner());
        current.cert.first().map(|c| c.to_vec()).unwrap_or_default()
    }

    fn read(dir: &CaDir, provider: &Arc<CryptoProvider>) -> anyhow::Result<Arc<CertifiedKey>> {
        let chain = vec![
            CertificateDer::from_pem_file(dir.tls_certificate())?,
            CertificateDer::from_pem_file(dir.root_certificate())?,
        ];
        let key = PrivateKeyDer::from_pem_slice(read_private(&dir.tls_key())?.as_bytes())?;
        let key = provider.key_provider.load_private_key(key)?;
        let certified = CertifiedKey::new(chain, key);
        certified.keys_match()?;
        Ok(Arc::new(certified))
    }
}

impl ResolvesServerCert for ReloadableServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

/// TLS 1.3 only, ALPN h2, the CA's (reloadable) server certificate, the reloadable client
/// verifier.
pub fn server_config(
    certificate: Arc<ReloadableServerCert>,
    verifier: Arc<ReloadableClientVerifier>,
    provider: Arc<CryptoProvider>,
) -> anyhow::Result<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(certificate);
    config.alpn_protocols = vec![b"h2".to_vec()];
    medledger_tls::no_resumption_server(&mut config);
    Ok(config)
}
