//! `medledger-ca`: the membership certificate authority.
//!
//! ```text
//! medledger-ca init  --dir D [--host NAME]...
//! medledger-ca serve --dir D --listen ADDR [--cert-validity 365d] [--tls-validity 1825d] [--metrics-listen ADDR]
//! medledger-ca tls-renew --dir D [--host NAME]...
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use medledger_membership::authority::{BOOTSTRAP_ADMIN, CertificateAuthority};
use medledger_membership::files::CaDir;
use medledger_membership::service::now_unix;
use medledger_membership::{parse_duration_seconds, serve};

#[derive(Parser)]
#[command(
    name = "medledger-ca",
    version,
    about = "The medledger membership certificate authority"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new CA: root key and certificate, TLS certificate, bootstrap admin secret.
    Init {
        /// Directory for the CA's keys and database (created; must not hold a CA yet).
        #[arg(long, env = "MEDLEDGER_CA_DIR")]
        dir: PathBuf,
        /// Extra DNS names or IP addresses for the CA's TLS certificate (besides localhost
        /// and 127.0.0.1). Repeat for several.
        #[arg(long = "host")]
        hosts: Vec<String>,
    },
    /// Serve the Membership gRPC API over TLS 1.3.
    Serve {
        #[arg(long, env = "MEDLEDGER_CA_DIR")]
        dir: PathBuf,
        /// Address to listen on, e.g. 127.0.0.1:7054 (port 0 picks a free port).
        #[arg(long, env = "MEDLEDGER_CA_LISTEN", default_value = "127.0.0.1:7054")]
        listen: SocketAddr,
        /// Lifetime of issued enrollment certificates: 365d, 12h, 30m, 90s.
        #[arg(long, env = "MEDLEDGER_CA_CERT_VALIDITY", default_value = "365d", value_parser = parse_duration_seconds)]
        cert_validity: i64,
        /// Lifetime of the CA's own TLS certificate: it renews it when due (its last quarter,
        /// at most 30 days), and at once when it has one issued for longer.
        #[arg(long, env = "MEDLEDGER_CA_TLS_VALIDITY", default_value = "1825d", value_parser = parse_duration_seconds)]
        tls_validity: i64,
        /// Serve Prometheus metrics at http://ADDR/metrics (certificates close to expiry,
        /// the TLS certificate's and the root's time left).
        #[arg(long, env = "MEDLEDGER_CA_METRICS_LISTEN")]
        metrics_listen: Option<SocketAddr>,
    },
    /// Renew the CA's TLS certificate: a new key and certificate from the same root, for
    /// the names it has and each --host. No client or peer needs anything new; a running
    /// `serve` presents it within 10 seconds.
    TlsRenew {
        #[arg(long, env = "MEDLEDGER_CA_DIR")]
        dir: PathBuf,
        /// A DNS name or IP address to add. Repeat for several.
        #[arg(long = "host")]
        hosts: Vec<String>,
        /// Lifetime of the new TLS certificate.
        #[arg(long, default_value = "1825d", value_parser = parse_duration_seconds)]
        validity: i64,
    },
}

fn main() -> anyhow::Result<()> {
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    match Cli::parse().command {
        Command::Init { dir, hosts } => {
            let dir = CaDir::new(dir);
            let outcome = CertificateAuthority::init(&dir, &hosts, now_unix())
                .with_context(|| format!("initializing the CA in {}", dir.root.display()))?;
            println!("Created a medledger CA in {}", dir.root.display());
            println!("  root certificate: {}", dir.root_certificate().display());
            println!("  root fingerprint (SHA-256): {}", outcome.root_fingerprint);
            println!(
                "  one-time secret for the bootstrap admin {BOOTSTRAP_ADMIN:?}: {}",
                outcome.admin_secret_path.display()
            );
            println!(
                "Next: medledger-ca serve --dir {}, then medledger enroll --name {BOOTSTRAP_ADMIN} --secret \"$(cat {})\" --ca-root {}",
                dir.root.display(),
                outcome.admin_secret_path.display(),
                dir.root_certificate().display()
            );
            Ok(())
        }
        Command::TlsRenew {
            dir,
            hosts,
            validity,
        } => {
            let dir = CaDir::new(dir);
            let names = CertificateAuthority::renew_tls(&dir, &hosts, now_unix(), validity)
                .with_context(|| {
                    format!("renewing the TLS certificate in {}", dir.root.display())
                })?;
            println!(
                "Renewed the CA's TLS certificate ({}) for {}; same root, so nothing else changes",
                dir.tls_certificate().display(),
                names.join(", ")
            );
            Ok(())
        }
        Command::Serve {
            dir,
            listen,
            cert_validity,
            tls_validity,
            metrics_listen,
        } => {
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(serve(
                CaDir::new(dir),
                listen,
                cert_validity,
                tls_validity,
                metrics_listen,
                |addr| {
                    // Scripts and tests read this line to learn the port.
                    println!("medledger-ca listening on https://{addr}");
                    tracing::info!(%addr, "medledger-ca listening");
                },
                shutdown_signal(),
            ))
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C, so in-flight requests finish and RocksDB closes cleanly.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate => {},
    }
    tracing::info!("shutting down");
}
