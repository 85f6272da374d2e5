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

/// How often `serve` looks for a renewed TLS certificate (`medledger-ca tls-renew`).
pub const TLS_RELOAD_CHECK: std::time::Duration = std::time::Duration::from_secs(10);

/// How often `serve` looks for certificates close to their end: an eighth of the validity it
/// issues, between 5 seconds and 5 minutes (a one-minute certificate is reported 15 s ahead,
/// [`authority::expiry_warning_seconds`], so the check runs every 7.5 s).
pub fn expiry_check_interval(validity_seconds: i64) -> std::time::Duration {
    let seconds = (validity_seconds / 8).clamp(5, 300);
    std::time::Duration::from_secs(u64::try_from(seconds).unwrap_or(300))
}

/// Serves the CA on `listen` until `shutdown` resolves, issuing enrollment certificates for
/// `validity_seconds` and renewing its own TLS certificate for `tls_validity_seconds` when it
/// is due (or at once, when the one it has was issued for longer). Calls `on_listening` with
/// the bound address (useful with port 0) once the socket is open. With `metrics_listen`,
/// Prometheus metrics are served at `/metrics` there.
pub async fn serve(
    dir: CaDir,
    listen: SocketAddr,
    validity_seconds: i64,
    tls_validity_seconds: i64,
    metrics_listen: Option<SocketAddr>,
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
    // A renewal that crashed between its renames is finished first.
    authority::complete_tls_renewal(&dir)?;
    let certificate = tls::ReloadableServerCert::load(&dir, provider.clone())?;
    let config = Arc::new(tls::server_config(
        certificate.clone(),
        verifier.clone(),
        provider,
    )?);
    if let Some(addr) = metrics_listen {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| anyhow::anyhow!("serving metrics on {addr}: {e}"))?;
        tracing::info!(%addr, "Prometheus metrics at /metrics");
    }
    let watchers = [
        tokio::spawn(reload_renewed_tls(dir.clone(), certificate.clone())),
        tokio::spawn(renew_own_tls(
            dir.clone(),
            certificate.clone(),
            tls_validity_seconds,
        )),
        tokio::spawn(warn_before_expiry(
            ca.clone(),
            certificate,
            expiry_check_interval(validity_seconds),
        )),
    ];

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
    for watcher in watchers {
        watcher.abort();
    }
    Ok(())
}

/// Renews the CA's own TLS certificate from the same root, with the same names, for
/// `validity_seconds`, and presents it: when it is due ([`medledger_crypto::renewal_due_at`]:
/// the last quarter of its lifetime, at most 30 days), or at once when it was issued for
/// longer than `validity_seconds` (a CA told to use shorter ones). Clients trust the root,
/// so nothing changes for them.
async fn renew_own_tls(
    dir: CaDir,
    certificate: Arc<tls::ReloadableServerCert>,
    validity_seconds: i64,
) {
    loop {
        let due = authority::certificate_validity(&certificate.certificate_der()).is_ok_and(
            |(not_before, not_after)| {
                medledger_crypto::issued_lifetime(not_before, not_after) > validity_seconds
                    || now_unix() >= medledger_crypto::renewal_due_at(not_before, not_after)
            },
        );
        if due {
            let renewed = {
                let dir = dir.clone();
                tokio::task::spawn_blocking(move || {
                    CertificateAuthority::renew_tls(&dir, &[], now_unix(), validity_seconds)
                })
                .await
            };
            match renewed {
                Ok(Ok(_)) => match certificate.reload() {
                    Ok(()) => tracing::info!(
                        validity_seconds,
                        "renewed the CA's own TLS certificate; presented from now on"
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "the renewed TLS certificate cannot be used")
                    }
                },
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "could not renew the CA's TLS certificate")
                }
                Err(e) => tracing::warn!(error = %e, "the TLS renewal did not finish"),
            }
        }
        tokio::time::sleep(expiry_check_interval(validity_seconds)).await;
    }
}

/// Takes in a TLS certificate renewed by `medledger-ca tls-renew` when its file changes.
async fn reload_renewed_tls(dir: CaDir, certificate: Arc<tls::ReloadableServerCert>) {
    let stamp = |dir: &CaDir| {
        std::fs::metadata(dir.tls_certificate())
            .and_then(|m| m.modified())
            .ok()
    };
    let mut seen = stamp(&dir);
    loop {
        tokio::time::sleep(TLS_RELOAD_CHECK).await;
        let now = stamp(&dir);
        if now == seen {
            continue;
        }
        match certificate.reload() {
            Ok(()) => {
                seen = now;
                tracing::info!("presenting the renewed TLS certificate");
            }
            // Half-written files are never seen (tls-renew renames them into place); a bad
            // pair is reported and the certificate in use stays.
            Err(e) => tracing::error!(error = %e, "the renewed TLS certificate cannot be used"),
        }
    }
}

/// Warns (log line and metric) before anything the CA issued expires: every identity's
/// newest certificate ([`CertificateAuthority::expiring`]), the CA's TLS certificate and its
/// root. Each certificate is named once when it enters its warning window; the gauges say
/// how many are in it now.
async fn warn_before_expiry(
    ca: Arc<CertificateAuthority>,
    certificate: Arc<tls::ReloadableServerCert>,
    every: std::time::Duration,
) {
    let mut warned: std::collections::HashSet<Vec<u8>> = Default::default();
    let mut warned_own: std::collections::HashSet<Vec<u8>> = Default::default();
    loop {
        let now = now_unix();
        let found = {
            let ca = ca.clone();
            tokio::task::spawn_blocking(move || ca.expiring(now)).await
        };
        match found {
            Ok(Ok(expiring)) => {
                let mut now_warned = std::collections::HashSet::new();
                let mut expired = 0u64;
                for e in &expiring {
                    if e.not_after_unix <= now {
                        expired += 1;
                    }
                    if !warned.contains(&e.serial) {
                        tracing::warn!(
                            name = %e.name,
                            serial = %hex::encode(&e.serial),
                            expires_in_s = e.not_after_unix - now,
                            "a certificate this CA issued expires soon (or has): its holder \
                             renews it with `medledger reenroll`"
                        );
                    }
                    now_warned.insert(e.serial.clone());
                }
                warned = now_warned;
                metrics::gauge!("medledger_ca_certificates_expiring").set(expiring.len() as f64);
                metrics::gauge!("medledger_ca_certificates_expired").set(expired as f64);
            }
            Ok(Err(e)) => tracing::error!(error = %e, "could not read the certificates issued"),
            Err(e) => tracing::error!(error = %e, "the expiry check failed"),
        }
        for (what, der, metric) in [
            (
                "the CA's TLS certificate (renew it with `medledger-ca tls-renew`)",
                certificate.certificate_der(),
                "medledger_ca_tls_certificate_expires_in_seconds",
            ),
            (
                "the CA root (a new network is needed before it ends)",
                ca.root().der().to_vec(),
                "medledger_ca_root_expires_in_seconds",
            ),
        ] {
            let Ok(not_after) = authority::certificate_not_after(&der) else {
                continue;
            };
            let left = not_after.saturating_sub(now);
            metrics::gauge!(metric).set(left as f64);
            if left <= 30 * 86_400 && !warned_own.contains(&der) {
                tracing::warn!(expires_in_s = left, "{what} expires soon");
                warned_own.insert(der);
            }
        }
        tokio::time::sleep(every).await;
    }
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
