//! `medledger network up|status|down|add-peer|remove-peer` and `medledger ledger verify`.

use std::path::PathBuf;

use crate::verify::{self, BlockSource};
use clap::{Args, Subcommand};
use medledger_devnet::{self as network, Layout, StoreLayout, UpOptions};
use medledger_execution::genesis::Genesis;
use medledger_proto::v1;
use medledger_sdk::configuration::Changes;
use medledger_sdk::error::ClientError;
use medledger_sdk::peer::PeerSet;
use serde_json::json;

use crate::{Cli, DEFAULT_PEER, Output, open_wallet};
use medledger_sdk::wallet::Wallet;

#[derive(Subcommand)]
pub enum NetworkCommand {
    /// Start a CA, n ≥ 4 PBFT peers and the storage gateway on loopback (created the first
    /// time), wait until all are healthy, print the endpoints. Stays in the foreground and
    /// stops everything on Ctrl-C, unless --detach.
    Up(UpArgs),
    /// What runs, with each peer's height and view.
    Status(DirArg),
    /// Stop every process of the network; its state stays on disk.
    Down(DirArg),
    /// Add a peer: enroll the next one (peerK, on the next free port), change the
    /// configuration to add it (approved by both local admins, docs/adr/0011), start it
    /// with --join and wait until it is linked to every other peer. At most f new peers per
    /// change: grow 4 → 7 one at a time.
    AddPeer(DirArg),
    /// Remove a peer: change the configuration to remove it (approved by both local
    /// admins), then stop it. Its ledger stays on disk.
    RemovePeer {
        /// The peer's name (as `network status` shows it).
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Rotate a peer's signing key: stop it, renew its certificate with a new key (the CA
    /// revokes the old one), change the configuration to replace the old key by the new
    /// one (same name and address; it becomes the last replica), and start it again with
    /// --join on its own ledger, which it brings up to date across the change.
    RekeyPeer {
        /// The peer's name (as `network status` shows it).
        name: String,
        #[command(flatten)]
        dir: DirArg,
    },
    /// Pin the wallet to the network whose genesis block is given (from its administrator):
    /// the wallet then talks only to that network's peers and refuses any other.
    Pin {
        /// The network's genesis block (`medledger-peer genesis -o FILE`; D/genesis.pb of a
        /// local network).
        #[arg(long)]
        genesis: PathBuf,
    },
}

#[derive(Args)]
pub struct DirArg {
    /// The network's directory. Default: $MEDLEDGER_NETWORK_DIR, else
    /// ~/.local/share/medledger/network.
    #[arg(long, env = "MEDLEDGER_NETWORK_DIR")]
    pub dir: Option<PathBuf>,
}

impl DirArg {
    pub fn resolve(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(network::default_dir)
    }
}

#[derive(Args)]
pub struct UpArgs {
    #[command(flatten)]
    dir: DirArg,
    /// How many peers a new network has: at least 4 (f faults need 3f + 1: 4, 7, 10...);
    /// default 4. An existing network keeps its own (see add-peer, remove-peer).
    #[arg(long)]
    peers: Option<usize>,
    /// Leave the processes running in the background and return.
    #[arg(long)]
    detach: bool,
    /// Most transactions per block (genesis; only when the network is first created).
    #[arg(long)]
    max_batch: Option<u32>,
    /// The primary proposes a partial block after this many milliseconds (genesis; only when
    /// the network is first created).
    #[arg(long)]
    batch_timeout_ms: Option<u64>,
    #[arg(long, default_value = "127.0.0.1:7054")]
    ca_listen: String,
    /// The first peer's port; the others follow it.
    #[arg(long, default_value_t = 7061)]
    peer_port: u16,
    #[arg(long, default_value = "127.0.0.1:7070")]
    gateway_listen: String,
    /// Keep objects in an S3-compatible endpoint instead of a local folder.
    #[command(flatten)]
    s3: S3Args,
}

/// An S3-compatible object store.
#[derive(Args)]
pub struct S3Args {
    /// The endpoint (with --s3-bucket and --s3-credentials-file).
    #[arg(long, requires_all = ["s3_bucket", "s3_credentials_file"])]
    s3_endpoint: Option<String>,
    #[arg(long)]
    s3_bucket: Option<String>,
    #[arg(long, default_value = "garage")]
    s3_region: String,
    /// A 0600 file with access_key_id = ... and secret_access_key = ... lines.
    #[arg(long)]
    s3_credentials_file: Option<PathBuf>,
}

impl S3Args {
    /// The store these flags name, if --s3-endpoint is given.
    fn layout(&self) -> Option<StoreLayout> {
        self.s3_endpoint.as_ref().map(|endpoint| StoreLayout::S3 {
            endpoint: endpoint.clone(),
            bucket: self.s3_bucket.clone().unwrap_or_default(),
            region: self.s3_region.clone(),
            credentials_file: self.s3_credentials_file.clone().unwrap_or_default(),
        })
    }
}

fn summary(layout: &Layout) -> Output {
    let mut text = format!("medledger network in {}\n", layout.dir.display());
    text.push_str(&format!("  CA       {}\n", layout.ca_url()));
    for (name, p) in layout.peer_names().iter().zip(&layout.peers) {
        text.push_str(&format!("  {name:<8} {p}\n"));
    }
    text.push_str(&format!(
        "  gateway  {} (objects in {})\n",
        layout.gateway_listen,
        network::describe(&layout.store)
    ));
    text.push_str(&format!(
        "  admin wallet: {}\n  CA root: {}\n  genesis: {}\n",
        layout.admin_wallet().display(),
        layout.ca_root().display(),
        layout.genesis().display()
    ));
    Output {
        text,
        json: json!({
            "dir": layout.dir,
            "ca": layout.ca_url(),
            "peers": layout.peers,
            "gateway": layout.gateway_listen,
            "objects": network::describe(&layout.store),
            "admin_wallet": layout.admin_wallet(),
            "ca_root": layout.ca_root(),
            "genesis": layout.genesis(),
        }),
    }
}

pub async fn run_network(cli: &Cli, command: &NetworkCommand) -> Result<Output, ClientError> {
    match command {
        NetworkCommand::Up(args) => {
            let store = args.s3.layout();
            let options = UpOptions {
                dir: args.dir.resolve(),
                peers: args.peers,
                ca_listen: args.ca_listen.clone(),
                peer_port: args.peer_port,
                gateway_listen: args.gateway_listen.clone(),
                store,
                bin_dir: network::sibling_bin_dir(),
                genesis_args: [
                    args.max_batch.map(|m| format!("--max-batch={m}")),
                    args.batch_timeout_ms
                        .map(|t| format!("--batch-timeout-ms={t}")),
                ]
                .into_iter()
                .flatten()
                .collect(),
            };
            if !cli.json {
                let first = !options.dir.join("network.json").exists();
                eprintln!(
                    "starting the network in {}{}...",
                    options.dir.display(),
                    if first {
                        " (first time: creating the CA, identities and genesis block)"
                    } else {
                        ""
                    }
                );
            }
            let layout = network::up(&options).await?;
            name_local_auditor(&layout).await?;
            let mut out = summary(&layout);
            if args.detach {
                out.text.push_str(&format!(
                    "All running. Next: `medledger demo`; stop with `medledger network down{}`.",
                    dir_flag(&args.dir)
                ));
                return Ok(out);
            }
            // In the foreground: print now, run until Ctrl-C (or a process stops).
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&out.json).unwrap_or_default()
                );
            } else {
                println!("{}All running. Ctrl-C stops the network.", out.text);
            }
            let reason = wait_for_stop(&layout).await;
            let stopped = network::down(&layout).await;
            Ok(Output {
                text: format!("{reason}; stopped {}.", stopped.join(", ")),
                json: json!({"stopped": stopped, "reason": reason}),
            })
        }
        NetworkCommand::Pin { genesis } => {
            let wallet = open_wallet(cli).await?;
            let block = medledger_sdk::peer::read_genesis_file(genesis)?;
            let network = medledger_sdk::peer::pin_network(&wallet, block)?;
            Ok(Output {
                text: format!(
                    "Wallet {} is pinned to network {}.\nCompare this id with the one your \
                     network's administrator publishes.",
                    wallet.dir.display(),
                    hex::encode(network)
                ),
                json: json!({"wallet": wallet.dir, "network": hex::encode(network)}),
            })
        }
        NetworkCommand::Status(dir) => {
            let layout = Layout::read(&dir.resolve())?;
            let components = network::status(&layout).await;
            let mut text = format!("medledger network in {}\n", layout.dir.display());
            for c in &components {
                text.push_str(&format!(
                    "  {:<8} {:<24} {:<9} {}\n",
                    c.name,
                    c.address,
                    if c.running { "running" } else { "STOPPED" },
                    c.detail
                ));
            }
            let all = components.iter().all(|c| c.running);
            text.push_str(if all {
                "All running."
            } else {
                "Not all running: start them with `medledger network up`."
            });
            let participation = network::participation(&layout).await;
            text.push('\n');
            text.push_str(&participation.describe());
            Ok(Output {
                text,
                json: json!({
                    "dir": layout.dir,
                    "all_running": all,
                    "components": components,
                    "participation": participation,
                    "more_may_fail": participation.more_may_fail(),
                }),
            })
        }
        NetworkCommand::AddPeer(dir) => add_peer(&Layout::read(&dir.resolve())?).await,
        NetworkCommand::RemovePeer { name, dir } => {
            remove_peer(Layout::read(&dir.resolve())?, name).await
        }
        NetworkCommand::RekeyPeer { name, dir } => {
            rekey_peer(Layout::read(&dir.resolve())?, name).await
        }
        NetworkCommand::Down(dir) => {
            let layout = Layout::read(&dir.resolve())?;
            let stopped = network::down(&layout).await;
            Ok(Output {
                text: if stopped.is_empty() {
                    "Nothing was running.".into()
                } else {
                    format!(
                        "Stopped {}. State kept in {}.",
                        stopped.join(", "),
                        layout.dir.display()
                    )
                },
                json: json!({"stopped": stopped}),
            })
        }
    }
}

/// The local network's two admins (`admin`, `admin2`): both approve its configuration
/// changes. Opened afresh for each step and renewed when due ([`network::open_current`]):
/// a step that follows a long one (adding a peer waits for it to link) must not act with a
/// certificate that ended meanwhile.
async fn admins(layout: &Layout) -> Result<(Wallet, Wallet), ClientError> {
    let (admin, _) = network::open_current(&layout.admin_wallet(), Some(&layout.ca_url())).await?;
    let (second, _) = network::open_current(
        &layout.wallets().join(network::SECOND_ADMIN),
        Some(&layout.ca_url()),
    )
    .await?;
    Ok((admin, second))
}

/// A local network whose configuration names no auditor (one made before auditors were
/// named, issue 20 item 1, or whose admins removed theirs) gets its auditor (`wallets/
/// auditor`) named by its two admins, so that `ledger verify` and the demo read blocks.
async fn name_local_auditor(layout: &Layout) -> Result<(), ClientError> {
    let certificate = layout.auditor_wallet().join("cert.pem");
    if !certificate.exists() {
        return Ok(());
    }
    let (admin, _) = admins(layout).await?;
    let configuration = PeerSet::connect(&admin, layout.first_peer())
        .await?
        .configuration();
    if !configuration.auditors.is_empty() || configuration.admins.is_none() {
        return Ok(());
    }
    let block = change_configuration(
        layout,
        layout.first_peer(),
        &Changes {
            add_auditors: vec![certificate],
            valid_for_hours: 1,
            ..Default::default()
        },
    )
    .await?;
    eprintln!(
        "named the local network's auditor as a reader of blocks (the configuration that \
         names it committed in block {block})"
    );
    Ok(())
}

/// One configuration change with `changes`, proposed, approved by both local admins and
/// submitted through `via` ([`medledger_sdk::configuration::change`]). Returns the block
/// that committed it.
async fn change_configuration(
    layout: &Layout,
    via: &str,
    changes: &Changes,
) -> Result<u64, ClientError> {
    let (admin, second) = admins(layout).await?;
    let peers = PeerSet::connect(&admin, via).await?;
    medledger_sdk::configuration::change(&peers, &[&admin, &second], changes).await
}

async fn add_peer(layout: &Layout) -> Result<Output, ClientError> {
    let (admin, _) = admins(layout).await?;
    let (name, address) = network::next_peer(layout)?;
    let wallet = network::ensure_identity(layout, &admin, &name, "peer", Vec::new()).await?;
    let via = layout.first_peer().to_string();
    let block = change_configuration(
        layout,
        &via,
        &Changes {
            add_peers: vec![(wallet.dir.join("cert.pem"), address.clone())],
            valid_for_hours: 1,
            ..Default::default()
        },
    )
    .await?;
    // The layout follows the configuration as soon as it is committed.
    let grown = layout.with_peers_changed(None, Some((&name, &address)));
    grown.write()?;
    join_and_link(&grown, &admin, &name, &address, &layout.join_argument(0)).await?;
    Ok(Output {
        text: format!(
            "Added {name} at {address}: the configuration that adds it committed in block \
             {block}; it caught up and is linked to every other peer ({} peers).",
            grown.peers.len()
        ),
        json: json!({"name": name, "address": address, "block": block, "peers": grown.peer_names}),
    })
}

/// The index of peer `name` in `layout`, and another peer to go through (its index).
fn peer_and_other(layout: &Layout, name: &str) -> Result<(usize, usize), ClientError> {
    let names = layout.peer_names();
    let Some(index) = names.iter().position(|n| n == name) else {
        return Err(ClientError::Usage(format!(
            "no peer {name} in this network; its peers are {}",
            names.join(", ")
        )));
    };
    // Another peer, one that runs if any does.
    let others: Vec<usize> = (0..layout.peers.len()).filter(|i| *i != index).collect();
    let via = others
        .iter()
        .find(|i| network::peer_runs(layout, &layout.peer_name(**i)))
        .or(others.first())
        .copied()
        .ok_or_else(|| ClientError::Usage(format!("{name} is the network's only peer")))?;
    Ok((index, via))
}

/// Starts peer `name` of `layout` at `address` with `--join via` (`NAME@HOST:PORT`), and
/// waits (2 min at most) until it is linked to every other peer and takes part in
/// consensus (caught up).
async fn join_and_link(
    layout: &Layout,
    admin: &Wallet,
    name: &str,
    address: &str,
    via: &str,
) -> Result<(), ClientError> {
    let bins = network::process::Binaries {
        dir: network::sibling_bin_dir(),
    };
    network::start_peer(layout, &bins, name, address, Some(via))?;
    network::wait_taking_part(layout, admin, name, std::time::Duration::from_secs(120)).await
}

async fn rekey_peer(layout: Layout, name: &str) -> Result<Output, ClientError> {
    let (index, other) = peer_and_other(&layout, name)?;
    let via = layout.peers[other].clone();
    let address = layout.peers[index].clone();
    let (admin, _) = admins(&layout).await?;
    // Checked before anything is stopped or renewed: without this peer, the others must
    // still be enough to order the change (else the network would halt, with the old
    // certificate revoked and no way back to the old key).
    let now = network::participation_of(&PeerSet::connect(&admin, &via).await?).await;
    let others = now
        .taking_part
        .iter()
        .filter(|p| p.as_str() != name)
        .count();
    if others < now.quorum() {
        return Err(ClientError::Usage(format!(
            "{name} was left as it is: without it {others} of the {} peers take part, and the \
             change that rotates its key needs {}. {} Bring the others back first (`medledger \
             network up`)",
            now.n,
            now.quorum(),
            now.describe()
        )));
    }
    network::stop(&layout.dir, vec![name.to_string()]).await;
    // Stopped and its old certificate revoked: if the change fails here, running this
    // again renews once more and retries it.
    let (_, second) = admins(&layout).await?;
    let network::rekey::Rekeyed {
        old_key,
        new_key,
        block,
    } = network::rekey::replace_peer_key(
        &layout,
        name,
        &address,
        &PeerSet::connect(&admin, &via).await?,
        &[&admin, &second],
    )
    .await?;
    // Replica ids follow the configuration's order: it is the last one now.
    let moved = layout.with_peers_changed(Some(index), Some((name, &address)));
    moved.write()?;
    join_and_link(&moved, &admin, name, &address, &layout.join_argument(other)).await?;
    Ok(Output {
        text: format!(
            "{name} signs with a new key ({new_key}, was {old_key}): the configuration that \
             replaces its key committed in block {block}; it is running again, caught up and \
             linked to every other peer."
        ),
        json: json!({"name": name, "block": block, "old_key": old_key, "new_key": new_key, "peers": moved.peer_names}),
    })
}

async fn remove_peer(layout: Layout, name: &str) -> Result<Output, ClientError> {
    let (index, other) = peer_and_other(&layout, name)?;
    let via = layout.peers[other].clone();
    let block = change_configuration(
        &layout,
        &via,
        &Changes {
            remove_peers: vec![name.to_string()],
            valid_for_hours: 1,
            ..Default::default()
        },
    )
    .await?;
    let shrunk = layout.with_peers_changed(Some(index), None);
    shrunk.write()?;
    let stopped = network::stop(&layout.dir, vec![name.to_string()]).await;
    // Its key retired (docs/adr/0011): no peer, client or joiner takes it as a source or a
    // confirmer any more.
    let revoked = retire(&layout, name).await?;
    Ok(Output {
        text: format!(
            "Removed {name}: the configuration without it committed in block {block}; {}; \
             its certificates revoked ({revoked}). Its ledger stays in {}.",
            if stopped.is_empty() {
                "it was not running"
            } else {
                "it was stopped"
            },
            layout.dir.join(name).display()
        ),
        json: json!({"name": name, "block": block, "stopped": !stopped.is_empty(), "revoked": revoked, "peers": shrunk.peer_names}),
    })
}

/// Revokes every certificate of the peer `name` at the CA (reason cessation of operation),
/// as the local network's admin; the records reach the ledger by themselves. Returns how
/// many certificates were revoked.
async fn retire(layout: &Layout, name: &str) -> Result<usize, ClientError> {
    let (admin, _) = network::open_current(&layout.admin_wallet(), Some(&layout.ca_url())).await?;
    let root = admin.root()?.der().to_vec();
    let mut ca = medledger_sdk::ca::CaClient::connect(
        &layout.ca_url(),
        &root,
        medledger_sdk::ca::TlsIdentity::Wallet(&admin),
    )
    .await?;
    let response = ca
        .revoke(v1::RevokeRequest {
            target: Some(v1::revoke_request::Target::Name(name.to_string())),
            reason: v1::RevocationReason::CessationOfOperation as i32,
        })
        .await?;
    Ok(response.records.len())
}

fn dir_flag(dir: &DirArg) -> String {
    match &dir.dir {
        Some(d) => format!(" --dir {}", d.display()),
        None => String::new(),
    }
}

async fn wait_for_stop(layout: &Layout) -> String {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return "cannot watch for signals".into(),
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return "interrupted".into(),
            _ = term.recv() => return "terminated".into(),
            _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                if let Some(name) = network::any_stopped(layout) {
                    return format!(
                        "{name} stopped unexpectedly (see {})",
                        layout.dir.join(format!("{name}.log")).display()
                    );
                }
            }
        }
    }
}

#[derive(Args)]
pub struct VerifyArgs {
    /// The local network whose genesis block, first peer and object store to use, when
    /// --genesis and the store are not given.
    #[command(flatten)]
    network: DirArg,
    /// The genesis block to trust (as distributed when the network was founded). Default:
    /// the local network's, else the one the peer serves (checked against the wallet's CA).
    #[arg(long)]
    genesis: Option<PathBuf>,
    /// Read blocks from this peer data directory instead of over the network.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The object store's folder (for a local store).
    #[arg(long, conflicts_with = "s3_endpoint")]
    objects_dir: Option<PathBuf>,
    #[command(flatten)]
    s3: S3Args,
    /// Check the blocks only.
    #[arg(long)]
    skip_objects: bool,
    /// Audit the copy the peer given with --peer serves, exactly as served. Without it the
    /// network's ledger is audited: a block that peer serves which f+1 peers' votes do not
    /// cover is taken from another peer's proven copy, and named (NOT AS SERVED).
    #[arg(long, conflicts_with = "data_dir")]
    as_served: bool,
}

pub async fn run_verify(cli: &Cli, args: &VerifyArgs) -> Result<Output, ClientError> {
    let layout = Layout::read(&args.network.resolve()).ok();
    let store_layout = if args.skip_objects {
        None
    } else if let Some(dir) = &args.objects_dir {
        Some(StoreLayout::Local { dir: dir.clone() })
    } else {
        args.s3
            .layout()
            .or_else(|| layout.as_ref().map(|l| l.store.clone()))
    };
    let store = match &store_layout {
        Some(s) => Some(
            s.config()
                .and_then(|c| c.open())
                .map_err(|e| ClientError::Usage(format!("the object store: {e:#}")))?,
        ),
        None => None,
    };

    // Blocks: from a data directory, or from a peer (with a wallet).
    let wallet;
    let peers;
    let _renewing;
    let source = match &args.data_dir {
        Some(dir) => verify::open_data_dir(dir)?,
        None => {
            wallet = crate::reader_wallet(cli, layout.as_ref().map(|l| l.dir.as_path())).await?;
            let address = cli
                .peer
                .clone()
                .or_else(|| layout.as_ref().map(|l| l.first_peer().to_string()))
                .unwrap_or_else(|| DEFAULT_PEER.to_string());
            peers = std::sync::Arc::new(PeerSet::connect(&wallet, &address).await?);
            // A long chain takes longer to check than a short-lived certificate may have
            // left: the wallet is renewed as it goes, else the peer cuts the link at its end.
            _renewing =
                medledger_sdk::renewal::Renewing::start(Wallet::open(&wallet.dir)?, peers.clone());
            let found = peers.addresses().iter().position(|a| *a == address);
            // The copy audited as served is the one asked for, never another in its place.
            let index = match found {
                Some(index) => index,
                None if !args.as_served => 0,
                None => {
                    return Err(ClientError::Usage(format!(
                        "--as-served: {address} is not one of the network's peers as its \
                         configuration names them ({})",
                        peers.addresses().join(", ")
                    )));
                }
            };
            BlockSource::Peer {
                peers: &peers,
                index,
                ledger: !args.as_served,
            }
        }
    };
    let genesis_path = args
        .genesis
        .clone()
        .or_else(|| layout.as_ref().map(|l| l.genesis()));
    let wallet_pin = match (&genesis_path, open_wallet(cli).await) {
        (None, Ok(wallet)) => medledger_sdk::peer::pinned_genesis(&wallet)?,
        _ => None,
    };
    let (genesis, pinned) = match (&genesis_path, wallet_pin) {
        (Some(path), _) => (
            Genesis::read(path).map_err(|e| ClientError::Usage(format!("--genesis: {e}")))?,
            true,
        ),
        // The network the wallet is pinned to, not the one the serving peer names.
        (None, Some(genesis)) => (genesis, true),
        (None, None) => (source.genesis().await?, false),
    };

    let report = verify::verify(genesis, &source, store.as_deref()).await?;
    let mut text = format!(
        "network {}{}\n",
        hex::encode(&report.network_id[..8]),
        if pinned {
            ""
        } else {
            " (genesis as the peer serves it: pin it with --genesis)"
        }
    );
    for b in &report.blocks {
        if b.ok() {
            text.push_str(&format!(
                "  block {:>6}  ok      {} tx ({} valid){}\n",
                b.number,
                b.transactions,
                b.valid_transactions,
                if b.state_unchecked {
                    "; state not re-derived (diverged earlier)"
                } else {
                    ""
                }
            ));
        } else {
            text.push_str(&format!("  block {:>6}  FAILED\n", b.number));
            for p in &b.problems {
                text.push_str(&format!("                  - {p}\n"));
            }
        }
    }
    for line in &report.substituted {
        text.push_str(&format!("  NOT AS SERVED: {line}\n"));
    }
    for e in &report.erasures {
        text.push_str(&match e.purged_at {
            Some(at) if e.key_material_left > 0 => format!(
                "  record {}  erased at {}, purged at {at}, but KEY MATERIAL LEFT in {} state \
                 entries: {}\n",
                e.pseudonym,
                e.erased_at,
                e.key_material_left,
                e.key_material_keys.join(", ")
            ),
            Some(at) => format!(
                "  record {}  erased at {}, purged at {at}\n",
                e.pseudonym, e.erased_at
            ),
            None => format!(
                "  record {}  erased at {}, PURGE UNDER WAY: key material left until the \
                 gateway's purge steps finish it\n",
                e.pseudonym, e.erased_at
            ),
        });
    }
    for p in &report.peer_private {
        text.push_str(&match &p.status {
            Ok(s) if s.purged_uncompacted > 0 => format!(
                "  peer {}  private values: {} missing; {} deleted by purges (an erased \
                 record's key material among them) not yet compacted off its disk, expected \
                 within a minute (as the peer reports it)\n",
                p.peer, s.missing, s.purged_uncompacted
            ),
            Ok(s) => format!(
                "  peer {}  private values: {} missing; nothing deleted by purges left on its \
                 disk (as the peer reports it)\n",
                p.peer, s.missing
            ),
            Err(why) => format!("  peer {}  private values: {why}\n", p.peer),
        });
    }
    match &report.objects {
        Some(objects) => {
            for o in objects {
                text.push_str(&format!(
                    "  object {}  {}\n",
                    o.path,
                    o.state.describe()
                ));
            }
        }
        None => text.push_str(
            "  objects not checked: give --objects-dir or --s3-endpoint (or --dir of a local network)\n",
        ),
    }
    let under_way = report
        .erasures
        .iter()
        .filter(|e| e.purged_at.is_none())
        .count();
    let verdict = format!(
        "{} blocks ({} failed), {} objects ({} failed), {} erased records ({under_way} with \
         the purge under way){}",
        report.blocks.len(),
        report.failed_blocks(),
        report.objects.as_ref().map_or(0, Vec::len),
        report.failed_objects(),
        report.erasures.len(),
        if report.substituted.is_empty() {
            String::new()
        } else {
            format!(
                "; {} block(s) verified from another peer's proven copy, not as served (see \
                 NOT AS SERVED above: the serving peer lies or its copy is damaged)",
                report.substituted.len()
            )
        }
    );
    let json = json!({
        "network_id": hex::encode(report.network_id),
        "genesis_pinned": pinned,
        "ok": report.ok(),
        "diverged_at": report.diverged_at,
        "substituted": report.substituted,
        "blocks": report.blocks.iter().map(|b| json!({
            "number": b.number, "ok": b.ok(), "transactions": b.transactions,
            "valid_transactions": b.valid_transactions, "problems": b.problems,
            "state_unchecked": b.state_unchecked,
        })).collect::<Vec<_>>(),
        "erasures": report.erasures.iter().map(|e| json!({
            "pseudonym": e.pseudonym, "erased_at": e.erased_at, "purged_at": e.purged_at,
            "key_material_left": e.key_material_left,
            "key_material_keys": e.key_material_keys,
        })).collect::<Vec<_>>(),
        "peer_private": report.peer_private.iter().map(|p| match &p.status {
            Ok(s) => json!({
                "peer": p.peer, "missing": s.missing, "last_pass_ms": s.last_pass_ms,
                "purged_uncompacted": s.purged_uncompacted,
            }),
            Err(why) => json!({"peer": p.peer, "error": why}),
        }).collect::<Vec<_>>(),
        "objects": report.objects.as_ref().map(|o| o.iter().map(|v| json!({
            "path": v.path, "ok": v.state.ok(), "state": v.state.describe(),
        })).collect::<Vec<_>>()),
    });
    if report.ok() {
        text.push_str(&format!("VERIFIED: {verdict}"));
        Ok(Output { text, json })
    } else {
        // The report goes out in full, then the command fails.
        if cli.json {
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
        } else {
            println!("{}", text.trim_end());
        }
        Err(ClientError::VerificationFailed(verdict))
    }
}
