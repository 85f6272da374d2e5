//! The `medledger.v1.Membership` gRPC service: authenticates the caller from its TLS client
//! certificate, runs the CA operation off the async runtime (RocksDB syncs to disk), and maps
//! [`CaError`] to a gRPC status once, here.

use std::sync::Arc;

use medledger_crypto::EnrolledIdentity;
use medledger_proto::v1;
use medledger_proto::v1::membership_server::Membership;
use tonic::{Request, Response, Status};

use crate::authority::{
    CaError, CertificateAuthority, IssuedCertificate, Registration, is_reserved_name,
};
use crate::tls::ReloadableClientVerifier;

pub struct MembershipService {
    ca: Arc<CertificateAuthority>,
    tls: Arc<ReloadableClientVerifier>,
}

impl MembershipService {
    pub fn new(ca: Arc<CertificateAuthority>, tls: Arc<ReloadableClientVerifier>) -> Self {
        MembershipService { ca, tls }
    }

    /// The caller's identity, from the certificate it presented at the TLS handshake.
    fn caller<T>(&self, request: &Request<T>) -> Result<EnrolledIdentity, CaError> {
        let certs = request.peer_certs().ok_or(CaError::NoClientCertificate)?;
        let leaf = certs.first().ok_or(CaError::NoClientCertificate)?;
        self.ca.authenticate(leaf, now_unix())
    }

    fn enroll_response(&self, issued: IssuedCertificate) -> v1::EnrollResponse {
        v1::EnrollResponse {
            name: issued.name,
            certificate_der: issued.der,
            root_certificate_der: self.ca.root().der().to_vec(),
            serial: hex::encode(issued.serial),
            not_after_unix: issued.not_after_unix,
            superseded: Vec::new(),
        }
    }

    /// Runs a CA operation on the blocking pool.
    async fn run<R: Send + 'static>(
        &self,
        op: impl FnOnce(&CertificateAuthority) -> Result<R, CaError> + Send + 'static,
    ) -> Result<R, Status> {
        let ca = self.ca.clone();
        tokio::task::spawn_blocking(move || op(&ca))
            .await
            .map_err(|e| Status::internal(format!("CA task failed: {e}")))?
            .map_err(to_status)
    }

    /// After revocations: the TLS endpoint takes the new CRL, so the next handshake of a
    /// revoked certificate fails.
    async fn install_crl(&self, records: &[v1::SignedRevocationRecord]) -> Result<(), Status> {
        if records.is_empty() {
            return Ok(());
        }
        let (crl, number) = self.run(|ca| ca.crl(now_unix())).await?;
        self.tls.reload(&crl).map_err(|e| {
            tracing::error!(error = %e, "could not install the new CRL");
            Status::internal(
                "the revocation is recorded but the TLS endpoint could not load the new CRL",
            )
        })?;
        tracing::info!(
            revoked = records.len(),
            crl_number = number,
            "revoked certificates"
        );
        Ok(())
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The one place CA errors become gRPC statuses.
pub fn to_status(error: CaError) -> Status {
    let message = error.to_string();
    match error {
        CaError::InvalidArgument { .. } => Status::invalid_argument(message),
        CaError::BadSecret
        | CaError::SecretUsedUp(_)
        | CaError::IdentityRevoked(_)
        | CaError::NoClientCertificate
        | CaError::BadClientCertificate(_) => Status::unauthenticated(message),
        CaError::NotAdmin { .. } | CaError::RecordCredentialRefused(_) => {
            Status::permission_denied(message)
        }
        CaError::TooManyRecordCredentials(_) => Status::resource_exhausted(message),
        CaError::AlreadyExists(_) => Status::already_exists(message),
        CaError::NotFound(_) => Status::not_found(message),
        CaError::AlreadyInitialized(_) => Status::failed_precondition(message),
        CaError::Store(_) | CaError::Io(_) | CaError::Build(_) => {
            tracing::error!(error = %message, "internal CA failure");
            Status::internal("internal CA failure; the CA's log has the details")
        }
    }
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn register(
        &self,
        request: Request<v1::RegisterRequest>,
    ) -> Result<Response<v1::RegisterResponse>, Status> {
        let caller = self.caller(&request).map_err(to_status)?;
        let req = request.into_inner();
        let name = req.name.clone();
        let secret = self
            .run(move |ca| {
                ca.register(
                    &caller,
                    Registration {
                        name: req.name,
                        role: req.role,
                        attributes: req.attributes,
                        max_enrollments: req.max_enrollments,
                    },
                    now_unix(),
                )
            })
            .await?;
        tracing::info!(%name, "registered identity");
        Ok(Response::new(v1::RegisterResponse { name, secret }))
    }

    async fn enroll(
        &self,
        request: Request<v1::EnrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let req = request.into_inner();
        let issued = self
            .run(move |ca| {
                ca.enroll(
                    &req.name,
                    &req.secret,
                    &req.csr_der,
                    &req.encryption_public_key,
                    now_unix(),
                )
            })
            .await?;
        tracing::info!(serial = %hex::encode(&issued.serial), "issued enrollment certificate");
        Ok(Response::new(self.enroll_response(issued)))
    }

    async fn reenroll(
        &self,
        request: Request<v1::ReenrollRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let caller = self.caller(&request).map_err(to_status)?;
        let req = request.into_inner();
        let (issued, superseded) = self
            .run(move |ca| {
                ca.reenroll(
                    &caller,
                    &req.csr_der,
                    &req.encryption_public_key,
                    req.key_compromise,
                    now_unix(),
                )
            })
            .await?;
        if is_reserved_name(&issued.name) {
            // A record credential's serial is in every block it signs; logged next to its
            // enrollment's renewal a moment before, it would link the two.
            tracing::info!("renewed a record credential");
        } else {
            tracing::info!(
                serial = %hex::encode(&issued.serial),
                superseded = superseded.len(),
                "reissued enrollment certificate"
            );
        }
        self.install_crl(&superseded).await?;
        let mut response = self.enroll_response(issued);
        response.superseded = superseded;
        Ok(Response::new(response))
    }

    async fn issue_record_credential(
        &self,
        request: Request<v1::IssueRecordCredentialRequest>,
    ) -> Result<Response<v1::EnrollResponse>, Status> {
        let caller = self.caller(&request).map_err(to_status)?;
        let req = request.into_inner();
        let issued = self
            .run(move |ca| {
                let renew = Some(req.renew.as_str()).filter(|n| !n.is_empty());
                ca.issue_record_credential(
                    &caller,
                    &req.csr_der,
                    &req.encryption_public_key,
                    renew,
                    now_unix(),
                )
            })
            .await?;
        // Neither name: this log must not link the enrollment to the credential.
        tracing::info!("issued or renewed a record credential");
        Ok(Response::new(self.enroll_response(issued)))
    }

    async fn revoke(
        &self,
        request: Request<v1::RevokeRequest>,
    ) -> Result<Response<v1::RevokeResponse>, Status> {
        let caller = self.caller(&request).map_err(to_status)?;
        let req = request.into_inner();
        let reason = v1::RevocationReason::try_from(req.reason).map_err(|_| {
            Status::invalid_argument(format!("unknown revocation reason {}", req.reason))
        })?;
        let target = req
            .target
            .ok_or_else(|| Status::invalid_argument("give the name or the serial to revoke"))?;
        let records = self
            .run(move |ca| ca.revoke(&caller, &target, reason, now_unix()))
            .await?;
        self.install_crl(&records).await?;
        Ok(Response::new(v1::RevokeResponse { records }))
    }

    async fn get_crl(
        &self,
        request: Request<v1::GetCrlRequest>,
    ) -> Result<Response<v1::GetCrlResponse>, Status> {
        self.caller(&request).map_err(to_status)?;
        let (crl_der, crl_number) = self.run(|ca| ca.crl(now_unix())).await?;
        Ok(Response::new(v1::GetCrlResponse {
            crl_der,
            crl_number,
        }))
    }

    async fn list_revocations(
        &self,
        request: Request<v1::ListRevocationsRequest>,
    ) -> Result<Response<v1::ListRevocationsResponse>, Status> {
        self.caller(&request).map_err(to_status)?;
        let req = request.into_inner();
        let (records, latest_sequence) = self
            .run(move |ca| ca.revocations_since(req.since, req.limit))
            .await?;
        Ok(Response::new(v1::ListRevocationsResponse {
            records,
            latest_sequence,
        }))
    }

    async fn get_certificate(
        &self,
        request: Request<v1::GetCertificateRequest>,
    ) -> Result<Response<v1::GetCertificateResponse>, Status> {
        self.caller(&request).map_err(to_status)?;
        let name = request.into_inner().name;
        let now = now_unix();
        let certificate_der = self
            .run(move |ca| ca.current_certificate(&name, now))
            .await?;
        Ok(Response::new(v1::GetCertificateResponse {
            certificate_der,
        }))
    }

    async fn get_ca_info(
        &self,
        _request: Request<v1::GetCaInfoRequest>,
    ) -> Result<Response<v1::GetCaInfoResponse>, Status> {
        let latest = self.run(|ca| ca.latest_revocation_sequence()).await?;
        let root = self.ca.root();
        Ok(Response::new(v1::GetCaInfoResponse {
            root_certificate_der: root.der().to_vec(),
            root_fingerprint: hex::encode(root.fingerprint()),
            latest_revocation_sequence: latest,
            certificate_validity_seconds: self.ca.validity_seconds(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }))
    }

    async fn list_identities(
        &self,
        request: Request<v1::ListIdentitiesRequest>,
    ) -> Result<Response<v1::ListIdentitiesResponse>, Status> {
        let caller = self.caller(&request).map_err(to_status)?;
        let req = request.into_inner();
        let (identities, next_after) = self
            .run(move |ca| ca.identities(&caller, &req.after, req.limit))
            .await?;
        Ok(Response::new(v1::ListIdentitiesResponse {
            identities,
            next_after,
        }))
    }
}
