//! # medledger-execution
//!
//! The deterministic half of the peer, with no disk, network or runtime of its own (no
//! RocksDB, no tonic, no tokio), so that the peer, the auditor and the fuzz targets share
//! one copy of it:
//!
//! - [`genesis`]: the genesis block and the network's consensus parameters; [`config`]: the
//!   configurations that follow it (configuration transactions, admin approvals); [`chain`]:
//!   following them with proofs, as a client does.
//! - [`validate`]: an envelope from bytes to a checked transaction, or a refusal.
//! - [`block`]: block headers, transaction, result and state roots; [`merkle`]: the RFC 6962
//!   Merkle tree and its inclusion paths; [`proof`]: block votes and commit proofs.
//! - [`result_code`]: the code each refusal and chaincode error is recorded with.
//! - [`revocations`]: the CA's revocation records, taken in as peers serve them.
//! - [`wire`]: PBFT messages to and from `medledger.v1` protobuf, and the largest message
//!   a correct replica sends.
//! - [`state`]: the [`state::WorldState`] trait block execution reads, and the
//!   [`state::BlockCommit`] it produces; [`memory`]: that state in memory.
//! - [`execute`]: a certified batch to a block; [`stub`]: the chaincode's view of the state.
//! - [`certified`]: a block's batch and commit certificate, checked against its epoch's
//!   replicas; [`audit`]: verifying a chain from its blocks alone, re-executing it in memory.
//!
//! It imports proto, crypto, the PBFT core and the chaincode; `medledger-peer` (over
//! RocksDB) and `ledger verify` (in memory) import it.

pub mod audit;
pub mod block;
pub mod certified;
pub mod chain;
pub mod config;
pub mod execute;
pub mod genesis;
pub mod memory;
pub mod merkle;
pub mod proof;
pub mod result_code;
pub mod revocations;
pub mod state;
pub mod stub;
pub mod validate;
pub mod wire;
