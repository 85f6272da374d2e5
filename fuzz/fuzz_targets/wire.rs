//! Fuzz target for the replica wire decoder (`medledger_execution::wire`), cargo-afl. Any
//! bytes a replica sends are decoded as the peer decodes them (protobuf, then the strict
//! conversion to the PBFT core's types); what decodes encodes back to the same message, and
//! the size accounting the queues rely on never panics. The first byte names the sending
//! replica. Seeds: `fuzz/corpus/wire/`.

use medledger_execution::wire;
use medledger_proto::v1;
use prost::Message;

fn run(data: &[u8]) {
    let Some((&sender, rest)) = data.split_first() else {
        return;
    };
    let sender = u32::from(sender % 8);
    let Ok(proto) = v1::ReplicaMessage::decode(rest) else {
        return;
    };
    let Ok(message) = wire::from_proto(proto, sender) else {
        return;
    };
    let _ = message.batch_bytes();
    let _ = wire::claimed_sender(&message);
    let encoded = wire::to_proto(&message).encode_to_vec();
    let decoded = v1::ReplicaMessage::decode(encoded.as_slice()).expect("our encoding decodes");
    let back = wire::from_proto(decoded, sender).expect("our encoding converts");
    assert_eq!(back, message, "a message does not survive encoding");
}

fn main() {
    afl::fuzz!(|data: &[u8]| run(data));
}
