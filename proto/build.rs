//! Compiles the .proto files with protox (a pure-Rust protobuf compiler, so no system protoc
//! is needed) and generates prost messages and tonic clients and servers. The encoded file
//! descriptor set is written next to the code for gRPC reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/medledger/v1/membership.proto",
        "proto/medledger/v1/chaincode.proto",
        "proto/medledger/v1/peer.proto",
        "proto/medledger/v1/gateway.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("medledger_v1_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // A commit proof is large next to the chunks that follow it in a download stream.
        .boxed(".medledger.v1.DownloadResponse.part.proof")
        .compile_fds(descriptors)?;
    Ok(())
}
