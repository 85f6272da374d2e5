//! This process's own certificate, replaceable while it runs (issue 19 item 5). A peer or
//! gateway renews its enrollment certificate before it ends (keeping its key); every TLS
//! handshake from then on, as server and as client, presents the new one, with no restart and
//! no link dropped before the old certificate's own end.

use std::sync::{Arc, RwLock};

use rustls::SignatureScheme;
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate (DER) and private key (PKCS#8, Ed25519) this process presents, as rustls
/// resolvers for both sides of a handshake. [`LiveCertificate::replace`] swaps them
/// atomically: a handshake sees the old pair or the new one, never a mix.
pub struct LiveCertificate {
    current: RwLock<Current>,
    provider: Arc<CryptoProvider>,
    /// How many times the pair was replaced: links made before watch it to be made again.
    replaced: tokio::sync::watch::Sender<u64>,
}

struct Current {
    certified: Arc<CertifiedKey>,
    der: Vec<u8>,
}

impl std::fmt::Debug for LiveCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveCertificate").finish_non_exhaustive()
    }
}

impl LiveCertificate {
    /// The pair to present from now on.
    ///
    /// # Errors
    /// The key is not a PKCS#8 key the provider can sign with, or it does not match the
    /// certificate's public key.
    pub fn new(
        certificate_der: Vec<u8>,
        key_pkcs8_der: Vec<u8>,
        provider: Arc<CryptoProvider>,
    ) -> Result<Arc<Self>, rustls::Error> {
        let current = Current::load(&provider, certificate_der, key_pkcs8_der)?;
        Ok(Arc::new(LiveCertificate {
            current: RwLock::new(current),
            provider,
            replaced: tokio::sync::watch::Sender::new(0),
        }))
    }

    /// Presents `certificate_der` with `key_pkcs8_der` in every handshake from now on.
    /// Links already open keep the certificate they were made with (each ends at that
    /// certificate's end, [`crate::Guarded`]).
    ///
    /// # Errors
    /// As [`LiveCertificate::new`]; the pair presented is then unchanged.
    pub fn replace(
        &self,
        certificate_der: Vec<u8>,
        key_pkcs8_der: Vec<u8>,
    ) -> Result<(), rustls::Error> {
        let next = Current::load(&self.provider, certificate_der, key_pkcs8_der)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = next;
        self.replaced.send_modify(|n| *n = n.wrapping_add(1));
        Ok(())
    }

    /// Changes each time the pair is replaced: a long-lived link made before can be made
    /// again with the new certificate before the old one ends.
    pub fn replacements(&self) -> tokio::sync::watch::Receiver<u64> {
        self.replaced.subscribe()
    }

    /// The certificate presented now (DER).
    pub fn certificate_der(&self) -> Vec<u8> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .der
            .clone()
    }

    fn certified(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .certified
            .clone()
    }
}

impl Current {
    fn load(
        provider: &CryptoProvider,
        der: Vec<u8>,
        key_pkcs8_der: Vec<u8>,
    ) -> Result<Current, rustls::Error> {
        let key = provider
            .key_provider
            .load_private_key(PrivateKeyDer::Pkcs8(key_pkcs8_der.into()))?;
        let certified = CertifiedKey::new(vec![CertificateDer::from(der.clone())], key);
        certified.keys_match()?;
        Ok(Current {
            certified: Arc::new(certified),
            der,
        })
    }
}

impl ResolvesServerCert for LiveCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.certified())
    }
}

impl ResolvesClientCert for LiveCertificate {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.certified())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate and key of the fixture network: (DER, PKCS#8 DER).
    fn fixture(name: &str) -> (Vec<u8>, Vec<u8>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/fixtures/");
        let der = std::fs::read(format!("{dir}{name}.der")).unwrap();
        let pem = std::fs::read_to_string(format!("{dir}{name}.key")).unwrap();
        let key = medledger_crypto::SigningIdentity::from_pkcs8_pem(&pem)
            .unwrap()
            .to_pkcs8_der()
            .to_vec();
        (der, key)
    }

    fn presented(live: &LiveCertificate) -> Vec<u8> {
        let server = ResolvesClientCert::resolve(live, &[], &[]).unwrap();
        server.cert[0].to_vec()
    }

    #[test]
    fn a_replaced_certificate_is_presented_from_then_on_and_a_mismatched_one_never() {
        let (admin, admin_key) = fixture("admin");
        let (admin2, admin2_key) = fixture("admin2");
        let live =
            LiveCertificate::new(admin.clone(), admin_key.clone(), crate::provider()).unwrap();
        let mut replacements = live.replacements();
        assert_eq!(presented(&live), admin);
        assert!(!replacements.has_changed().unwrap());

        // Another identity's certificate with this key: refused, nothing changes.
        assert!(live.replace(admin2.clone(), admin_key.clone()).is_err());
        assert_eq!(presented(&live), admin);
        assert_eq!(live.certificate_der(), admin);
        assert!(!replacements.has_changed().unwrap());

        // A matching pair: presented at the next handshake, and announced.
        live.replace(admin2.clone(), admin2_key).unwrap();
        assert_eq!(presented(&live), admin2);
        assert_eq!(live.certificate_der(), admin2);
        assert!(replacements.has_changed().unwrap());
        replacements.borrow_and_update();
        assert!(!replacements.has_changed().unwrap());
    }
}
