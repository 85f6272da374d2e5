//! # medledger-pbft
//!
//! Castro–Liskov PBFT (OSDI '99, TOCS 2002) with signatures, n ≥ 3f + 1, as a pure state
//! machine in the style of raft-rs: the host calls [`Replica::request`], [`Replica::receive`],
//! [`Replica::tick`], [`Replica::executed`] and [`Replica::persisted`], and performs the
//! returned [`Action`]s in order (see `replica.rs` for the contract). The crate has no tokio,
//! sockets, clock, disk or OS randomness; signatures go through the host's [`Crypto`], and
//! every signed message kind has its own domain.
//!
//! - Normal case, batching, watermarks, consensus timestamps, request dedup: `replica.rs`.
//! - Checkpoints, garbage collection, divergence detection, state transfer: `replica.rs`.
//! - Suspecting the primary before leaving its view: `suspicion.rs`.
//! - View change and new view with signed certificates: `view_change.rs`.
//! - The commit certificate check shared with the auditor: `certificate.rs`.

mod certificate;
mod config;
mod message;
mod replica;
mod suspicion;
mod view_change;

pub use certificate::{CertificateError, check_commit_certificate};
pub use config::Config;
pub use message::*;
pub use replica::{Action, DropReason, DurableState, Replica, RequestStatus};
pub use suspicion::{
    STEP_DOWN_HOLD_TIMEOUTS, STEP_DOWN_MEMORY_TIMEOUTS, STEP_DOWN_PATIENCE_MAX_TIMEOUTS,
    STEP_DOWN_PATIENCE_TIMEOUTS,
};
