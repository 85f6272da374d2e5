//! # medledger-peer
//!
//! The node: it drives the PBFT core (`medledger-pbft`) with a real network, clock and disk,
//! validates and executes transactions through the EHR chaincode, keeps the ledger in RocksDB
//! and serves clients over mutual TLS. It imports every lower room (proto, crypto, tls,
//! consensus, chaincode) and is imported by none.
//!
//! - [`genesis`]: the genesis block and the network's parameters.
//! - [`ledger`], [`block`], [`pbft_store`]: what is on disk and how it is hashed.
//! - [`validate`], [`execute`], [`stub`]: from an ordered batch to a committed block.
//! - [`driver`]: the consensus thread; [`network`], [`wire`]: replica streams.
//! - [`service`]: the client API; [`node`]: assembling it all; [`config`].

pub mod audit;
pub mod block;
pub mod config;
pub mod driver;
pub mod execute;
pub mod genesis;
pub mod ledger;
pub mod network;
pub mod node;
pub mod pbft_store;
pub mod queue;
pub mod service;
pub mod stub;
pub mod validate;
pub mod wire;
