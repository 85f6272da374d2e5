//! The peer's link to the membership CA, used to follow its revocations
//! ([`crate::revocation_feed`]) and to renew the peer's own certificate
//! ([`crate::renewal`]). Mutual TLS: the CA's TLS certificate must chain to the genesis root
//! (the only trust anchor) and name the host of `url`; the peer presents the certificate it
//! holds now ([`medledger_tls::LiveCertificate`]), so a renewed peer dials with the new one.

use std::sync::Arc;
use std::time::Duration;

use medledger_proto::v1::membership_client::MembershipClient;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Largest answer taken from the CA (a page of revocation records, or a certificate, with
/// room to spare).
pub const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Where the CA is and who the peer is to it.
pub struct CaLink {
    /// `https://host:port` of the membership CA.
    pub url: String,
    /// The genesis CA root (DER).
    pub root_der: Vec<u8>,
    /// The peer's certificate, as renewed.
    pub certificate: Arc<medledger_tls::LiveCertificate>,
    /// The peer's Ed25519 key (PKCS#8 PEM): the same for every certificate it renews.
    pub key_pem: zeroize::Zeroizing<String>,
}

impl CaLink {
    /// A channel to the CA, connected now, presenting the certificate held now; with it, that
    /// certificate (DER), so a caller keeping the channel can tell when it is outdated.
    /// Each call times out after `timeout`.
    ///
    /// # Errors
    /// Why the CA could not be reached, as text.
    pub async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<(MembershipClient<Channel>, Vec<u8>), String> {
        let pem = |der: &[u8]| pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
        let presented = self.certificate.certificate_der();
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(pem(&self.root_der)))
            .identity(Identity::from_pem(pem(&presented), self.key_pem.as_bytes()));
        let channel = Endpoint::from_shared(self.url.clone())
            .map_err(|e| e.to_string())?
            .connect_timeout(timeout)
            .timeout(timeout)
            .tls_config(tls)
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            MembershipClient::new(channel).max_decoding_message_size(MAX_ANSWER_BYTES),
            presented,
        ))
    }
}
