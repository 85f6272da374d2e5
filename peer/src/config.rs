//! The peer's configuration: a TOML file, overridden by environment variables
//! (`MEDLEDGER_PEER_*`), overridden by command-line flags.
//!
//! ```toml
//! wallet = "/var/lib/medledger/peer0/wallet"     # signing.key, cert.pem (role peer)
//! genesis = "/etc/medledger/genesis.pb"
//! data_dir = "/var/lib/medledger/peer0"          # RocksDB ledger under data_dir/ledger
//! listen = "0.0.0.0:7051"                        # default: this peer's genesis address
//! metrics_listen = "127.0.0.1:9451"              # Prometheus /metrics; off when absent
//! ca_url = "https://ca.hospital.example:7054"    # revocations to follow; default: the wallet's CA
//! join = ["peer0@peer0.hospital.example:7051"]   # a joining peer: whom to catch up from
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub wallet: Option<PathBuf>,
    pub genesis: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    pub ca_url: Option<String>,
    pub join: Option<Vec<String>>,
    pub reconcile_seconds: Option<u64>,
}

impl FileConfig {
    pub fn read(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in {}", path.display()))
    }
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub wallet: PathBuf,
    pub genesis: PathBuf,
    pub data_dir: PathBuf,
    pub listen: Option<SocketAddr>,
    pub metrics_listen: Option<SocketAddr>,
    /// The membership CA whose revocation records this peer orders onto the ledger
    /// (`revocation_feed.rs`); `None`: the CA address in the wallet's `wallet.json`.
    pub ca_url: Option<String>,
    /// Peers (`NAME@HOST:PORT` or `HOST:PORT`) a peer that is not yet one of the replicas
    /// in force catches up from, before the peers of the configuration it knows, and one of
    /// which must confirm the block it reached (docs/adr/0011 §6).
    pub join: Vec<crate::join::JoinPeer>,
    /// How often this peer asks the others for committed private values it lacks
    /// (`reconcile.rs`, docs/adr/0017 §7); `None`: never (`reconcile_seconds = 0`).
    pub reconcile_every: Option<std::time::Duration>,
}

impl PeerConfig {
    /// `flags` (command line or environment) win over `file`.
    pub fn resolve(flags: FileConfig, file: FileConfig) -> anyhow::Result<PeerConfig> {
        let missing = |what: &str, env: &str| {
            anyhow::anyhow!(
                "no {what}: pass --{what} (or set {env}, or `{what} = ...` in --config)",
                what = what.replace('_', "-")
            )
        };
        Ok(PeerConfig {
            wallet: flags
                .wallet
                .or(file.wallet)
                .ok_or_else(|| missing("wallet", "MEDLEDGER_PEER_WALLET"))?,
            genesis: flags
                .genesis
                .or(file.genesis)
                .ok_or_else(|| missing("genesis", "MEDLEDGER_PEER_GENESIS"))?,
            data_dir: flags
                .data_dir
                .or(file.data_dir)
                .ok_or_else(|| missing("data_dir", "MEDLEDGER_PEER_DATA_DIR"))?,
            listen: flags.listen.or(file.listen),
            metrics_listen: flags.metrics_listen.or(file.metrics_listen),
            ca_url: flags.ca_url.or(file.ca_url),
            join: flags
                .join
                .or(file.join)
                .unwrap_or_default()
                .iter()
                .map(|text| text.parse().map_err(anyhow::Error::msg))
                .collect::<anyhow::Result<_>>()?,
            reconcile_every: match flags
                .reconcile_seconds
                .or(file.reconcile_seconds)
                .unwrap_or(crate::reconcile::DEFAULT_RECONCILE_SECONDS)
            {
                0 => None,
                s if s <= 86_400 => Some(std::time::Duration::from_secs(s)),
                s => anyhow::bail!("reconcile_seconds {s}: at most a day (86400), or 0 for never"),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file_and_unknown_keys_are_refused() {
        let file: FileConfig = toml::from_str(
            "wallet = \"/w\"\ngenesis = \"/g\"\ndata_dir = \"/d\"\nlisten = \"127.0.0.1:1\"\n",
        )
        .unwrap();
        let flags = FileConfig {
            listen: Some("127.0.0.1:2".parse().unwrap()),
            ..Default::default()
        };
        let c = PeerConfig::resolve(flags, file).unwrap();
        assert_eq!(c.listen, Some("127.0.0.1:2".parse().unwrap()));
        assert_eq!(c.wallet, PathBuf::from("/w"));
        assert!(toml::from_str::<FileConfig>("walet = \"/w\"").is_err());
        let err = PeerConfig::resolve(FileConfig::default(), FileConfig::default()).unwrap_err();
        assert!(err.to_string().contains("--wallet"), "{err}");
    }
}
