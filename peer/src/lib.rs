//! # medledger-peer
//!
//! The node: it drives the PBFT core (`medledger-pbft`) with a real network, clock and disk,
//! validates and executes transactions through the EHR chaincode, keeps the ledger in RocksDB
//! and serves clients over mutual TLS. It imports every lower room (proto, crypto, tls,
//! consensus, chaincode) and is imported by none.
//!
//! - [`genesis`], [`validate`], [`block`], [`wire`]: re-exported from `medledger-execution`,
//!   the deterministic half (no RocksDB, no tonic).
//! - [`ledger`], [`pbft_store`]: what is on disk.
//! - [`execute`]: the ledger as the world state execution reads (execution itself, the
//!   chaincode's stub and the auditor are in `medledger-execution`).
//! - [`driver`]: the consensus thread; [`inputs`]: its input queue; [`network`]: replica
//!   streams; [`queue`]: byte budgets; [`replica_crypto`]: the core's signatures.
//! - [`service`]: the client API; [`node`]: assembling it all; [`config`].
//! - [`revocation_feed`]: the CA's revocations, ordered onto the ledger without an operator;
//!   [`renewal`]: the peer's own certificate, renewed before it ends; [`ca_link`]: the link
//!   to the CA both use; [`wallet`]: the peer's key and certificate on disk.
//! - [`join`]: a peer that is not (yet) one of the replicas catching up, block by checked
//!   block, until the configuration that adds it; [`left_behind`]: a replica the others
//!   refuse reading the blocks it lacks, up to the change of the peers it missed.
//! - [`private_data`]: private values acknowledged and not committed yet (docs/adr/0017).

pub use medledger_execution::{block, genesis, validate, wire};

pub mod ca_link;
pub mod config;
pub mod driver;
pub mod execute;
pub mod fault_clock;
pub mod inputs;
pub mod join;
pub mod ledger;
pub mod left_behind;
pub mod lies;
pub mod network;
pub mod node;
pub mod pbft_store;
pub mod private_data;
pub mod queue;
pub mod readers;
pub mod reconcile;
pub mod renewal;
pub mod replica_crypto;
pub mod revocation_feed;
pub mod service;
pub mod state_transfer;
pub mod votes;
pub mod wallet;
