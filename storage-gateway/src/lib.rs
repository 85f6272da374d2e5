//! # medledger-gateway
//!
//! The storage gateway: clinical files, encrypted on the client, go into S3-compatible
//! object storage (or a local folder) and come out again, each move tied to a transaction
//! committed on the ledger. The gateway sees ciphertext only.
//!
//! - [`service::Gateway`]: the `medledger.v1.Gateway` gRPC service (Upload, Download).
//! - [`store::StoreConfig`]: the local filesystem or S3, through `object_store`.
//! - [`deletions`]: the objects of every committed erasure, deleted and confirmed.
//! - [`node::run`]: the process: mutual TLS 1.3 with an enrollment of role gateway, health.

pub mod deletions;
pub mod node;
pub mod service;
/// Object stores live in the SDK: auditors read them too (`medledger ledger verify`).
pub use medledger_sdk::store;
