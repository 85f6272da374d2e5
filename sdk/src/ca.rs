//! A client of the membership CA over TLS 1.3, with or without a client certificate.

use std::time::Duration;

use medledger_proto::v1;
use medledger_proto::v1::membership_client::MembershipClient;
use rustls_pki_types::ServerName;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::error::ClientError;
use crate::wallet::{Wallet, pem_encode};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Who the client is at the TLS handshake.
pub enum TlsIdentity<'a> {
    /// No client certificate (Enroll, GetCaInfo).
    Anonymous,
    /// The wallet's certificate and key.
    Wallet(&'a Wallet),
}

pub struct CaClient {
    url: String,
    inner: MembershipClient<Channel>,
    diagnosis: Option<Diagnosis>,
}

/// What is needed to find out why a handshake was refused.
struct Diagnosis {
    url: String,
    root_pem: String,
    cert_pem: String,
    key_pem: zeroize::Zeroizing<String>,
}

impl CaClient {
    /// Connects to the CA at `url` (`https://host:port`), trusting only `root_der`.
    pub async fn connect(
        url: &str,
        root_der: &[u8],
        identity: TlsIdentity<'_>,
    ) -> Result<CaClient, ClientError> {
        if !url.starts_with("https://") {
            return Err(ClientError::Usage(format!(
                "the CA address must start with https:// (got {url:?})"
            )));
        }
        let root_pem = pem_encode("CERTIFICATE", root_der);
        let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&root_pem));
        let mut diagnosis = None;
        if let TlsIdentity::Wallet(wallet) = identity {
            let key_pem = wallet.signing.to_pkcs8_pem();
            tls = tls.identity(Identity::from_pem(&wallet.cert_pem, key_pem.as_bytes()));
            diagnosis = Some(Diagnosis {
                url: url.to_string(),
                root_pem: root_pem.clone(),
                cert_pem: wallet.cert_pem.clone(),
                key_pem,
            });
        }
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| ClientError::Usage(format!("bad CA address {url:?}: {e}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .tls_config(tls)
            .map_err(|e| ClientError::Usage(format!("TLS settings for {url}: {e}")))?;
        let channel = endpoint
            .connect()
            .await
            .map_err(|e| ClientError::Unreachable {
                url: url.to_string(),
                why: error_chain(&e),
            })?;
        Ok(CaClient {
            url: url.to_string(),
            inner: MembershipClient::new(channel),
            diagnosis,
        })
    }

    /// Turns a failed call into a clear error. A certificate refused at the handshake shows up
    /// as a broken connection, so in that case we shake hands again ourselves and read the
    /// CA's TLS alert, which names the reason (revoked, expired, unknown CA).
    async fn explain(&self, status: tonic::Status) -> ClientError {
        use tonic::Code;
        if matches!(
            status.code(),
            Code::Unavailable | Code::Cancelled | Code::Unknown
        ) {
            if let Some(diagnosis) = &self.diagnosis
                && let Some(reason) = diagnosis.refusal_reason().await
            {
                return ClientError::CertificateRefused { reason };
            }
            return ClientError::Unreachable {
                url: self.url.clone(),
                why: status.message().to_string(),
            };
        }
        ClientError::from_status(status)
    }

    async fn finish<R>(
        &self,
        result: Result<tonic::Response<R>, tonic::Status>,
    ) -> Result<R, ClientError> {
        match result {
            Ok(response) => Ok(response.into_inner()),
            Err(status) => Err(self.explain(status).await),
        }
    }

    pub async fn ca_info(&mut self) -> Result<v1::GetCaInfoResponse, ClientError> {
        let result = self.inner.get_ca_info(v1::GetCaInfoRequest {}).await;
        self.finish(result).await
    }

    pub async fn register(
        &mut self,
        request: v1::RegisterRequest,
    ) -> Result<v1::RegisterResponse, ClientError> {
        let result = self.inner.register(request).await;
        self.finish(result).await
    }

    pub async fn enroll(
        &mut self,
        request: v1::EnrollRequest,
    ) -> Result<v1::EnrollResponse, ClientError> {
        let result = self.inner.enroll(request).await;
        self.finish(result).await
    }

    pub async fn reenroll(
        &mut self,
        request: v1::ReenrollRequest,
    ) -> Result<v1::EnrollResponse, ClientError> {
        let result = self.inner.reenroll(request).await;
        self.finish(result).await
    }

    /// A record credential for the caller, a patient under their enrollment certificate
    /// (issue 20 item 2); see [`crate::record_credential`].
    pub async fn issue_record_credential(
        &mut self,
        request: v1::IssueRecordCredentialRequest,
    ) -> Result<v1::EnrollResponse, ClientError> {
        let result = self.inner.issue_record_credential(request).await;
        self.finish(result).await
    }

    pub async fn revoke(
        &mut self,
        request: v1::RevokeRequest,
    ) -> Result<v1::RevokeResponse, ClientError> {
        let result = self.inner.revoke(request).await;
        self.finish(result).await
    }

    /// The current certificate of `name` (for its X25519 key).
    pub async fn certificate_of(&mut self, name: &str) -> Result<Vec<u8>, ClientError> {
        let response = self
            .inner
            .get_certificate(v1::GetCertificateRequest {
                name: name.to_string(),
            })
            .await;
        Ok(self.finish(response).await?.certificate_der)
    }

    pub async fn crl(&mut self) -> Result<v1::GetCrlResponse, ClientError> {
        let result = self.inner.get_crl(v1::GetCrlRequest {}).await;
        self.finish(result).await
    }

    pub async fn revocations(
        &mut self,
        since: u64,
    ) -> Result<v1::ListRevocationsResponse, ClientError> {
        let request = v1::ListRevocationsRequest { since, limit: 0 };
        let result = self.inner.list_revocations(request).await;
        self.finish(result).await
    }

    pub async fn identities(
        &mut self,
        after: String,
    ) -> Result<v1::ListIdentitiesResponse, ClientError> {
        let request = v1::ListIdentitiesRequest { after, limit: 0 };
        let result = self.inner.list_identities(request).await;
        self.finish(result).await
    }
}

impl Diagnosis {
    /// Shakes hands with the CA using the wallet's certificate and returns the reason the CA
    /// gave for refusing it, or `None` if it was not refused.
    async fn refusal_reason(&self) -> Option<String> {
        use rustls::AlertDescription as A;
        use rustls_pki_types::pem::PemObject;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};

        let authority = self
            .url
            .strip_prefix("https://")?
            .split('/')
            .next()?
            .to_string();
        let host = authority
            .rsplit_once(':')
            .map_or(authority.as_str(), |(h, _)| h);
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(rustls_pki_types::CertificateDer::from_pem_slice(self.root_pem.as_bytes()).ok()?)
            .ok()?;
        let chain =
            vec![rustls_pki_types::CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).ok()?];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).ok()?;
        let config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .ok()?;
        let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(&authority).await.ok()?;
        let server_name = ServerName::try_from(host).ok()?;
        let attempt = async {
            let mut tls = connector.connect(server_name, tcp).await?;
            // In TLS 1.3 the server judges the client certificate after the client finished
            // its side of the handshake; its verdict arrives on the first read.
            tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await?;
            let mut buf = [0u8; 64];
            tls.read(&mut buf).await
        };
        let result = tokio::time::timeout(CONNECT_TIMEOUT, attempt).await.ok()?;
        let error = result.err()?;
        let alert = error
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            .and_then(|e| match e {
                rustls::Error::AlertReceived(alert) => Some(*alert),
                _ => None,
            })?;
        Some(match alert {
            A::CertificateRevoked => "the certificate has been revoked".into(),
            A::CertificateExpired => "the certificate has expired (or is not yet valid)".into(),
            // DecryptError: an issuer of the same name exists, but its signature does not verify.
            A::UnknownCA | A::DecryptError => "the certificate was not issued by this CA".into(),
            A::BadCertificate | A::UnsupportedCertificate => {
                "the certificate is not acceptable".into()
            }
            other => format!("TLS alert {other:?}"),
        })
    }
}

/// The whole chain of an error's causes, for messages.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}
