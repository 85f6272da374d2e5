//! # medledger-proto
//!
//! The `medledger.v1` protobuf package: every message and gRPC service medledger speaks,
//! generated with prost and tonic from `proto/medledger/v1/*.proto`. Nothing else lives here;
//! it imports nothing of ours.

/// Generated code for package `medledger.v1`.
pub mod v1 {
    tonic::include_proto!("medledger.v1");

    /// Encoded `FileDescriptorSet` of the package, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/medledger_v1_descriptor.bin"));
}
