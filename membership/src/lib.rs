//! # medledger-membership
//!
//! The membership certificate authority (binary `medledger-ca`). It registers identities
//! (admin only), exchanges one-time secrets and CSRs for enrollment certificates that carry the
//! holder's role, attributes and X25519 key, reissues certificates for new keys, revokes them
//! (signed, numbered revocation records for the ledger, and an X.509 CRL for every TLS
//! endpoint), and keeps its state in RocksDB.
//!
//! It imports `medledger-proto` and `medledger-crypto`, nothing else of ours.
//!
//! - [`authority::CertificateAuthority`]: the rules and the state, independent of gRPC.
//! - [`service::MembershipService`]: the gRPC face, and the one mapping of errors to statuses.
//! - [`tls`]: TLS 1.3 with a client-certificate verifier whose CRL is swapped on revocation.
//! - [`store`]: the RocksDB layout. [`files`]: the CA directory.

pub mod authority;
pub mod files;
pub mod service;
pub mod store;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use medledger_proto::v1::membership_server::MembershipServer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::ReceiverStream;

use crate::authority::CertificateAuthority;
use crate::files::CaDir;
use crate::service::{MembershipService, now_unix};

/// Largest request the CA decodes. Its largest legitimate request (a Register with 32
/// maximal attributes) is under 16 KiB.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Serves the CA on `listen` until `shutdown` resolves. Calls `on_listening` with the bound
/// address (useful with port 0) once the socket is open.
pub async fn serve(
    dir: CaDir,
    listen: SocketAddr,
    validity_seconds: i64,
    on_listening: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let ca = {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || {
            CertificateAuthority::open(&dir, validity_seconds, now_unix())
        })
        .await??
    };
    let ca = Arc::new(ca);
    let (crl, _) = ca.crl(now_unix())?;
    let verifier = tls::ReloadableClientVerifier::new(ca.root().der(), &crl, provider.clone())?;
    let config = Arc::new(tls::server_config(&dir, verifier.clone(), provider)?);

    let listener = TcpListener::bind(listen).await?;
    on_listening(listener.local_addr()?);
    // The CA's own revocations are checked at each handshake by its CRL verifier; links
    // still end when the client's certificate expires.
    let incoming = ReceiverStream::new(medledger_tls::accept_tls(
        listener,
        config,
        medledger_tls::SharedRevocations::default(),
    ));

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<MembershipServer<MembershipService>>()
        .await;
    let membership = MembershipServer::new(MembershipService::new(ca, verifier))
        .max_decoding_message_size(MAX_REQUEST_BYTES);
    tonic::transport::Server::builder()
        .concurrency_limit_per_connection(64)
        .add_service(health_service)
        .add_service(membership)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

/// Parses a duration such as `365d`, `12h`, `30m`, `90s` or a plain number of seconds.
pub fn parse_duration_seconds(text: &str) -> Result<i64, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let number: i64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 365d, 12h, 30m or 90s"))?;
    let unit = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit in {text:?}: use s, m, h or d")),
    };
    match number.checked_mul(unit) {
        Some(seconds) if seconds > 0 => Ok(seconds),
        _ => Err(format!("{text:?} must be positive and not absurdly long")),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration_seconds;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_seconds("365d"), Ok(365 * 86_400));
        assert_eq!(parse_duration_seconds("2"), Ok(2));
        assert_eq!(parse_duration_seconds("3h"), Ok(3 * 3600));
        assert!(parse_duration_seconds("0s").is_err());
        assert!(parse_duration_seconds("5y").is_err());
        assert!(parse_duration_seconds("d").is_err());
        assert!(parse_duration_seconds("99999999999999999d").is_err());
    }
}
