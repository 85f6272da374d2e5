//! The query `access_keys` as the tests ask it (docs/adr/0017): each peer answers the private
//! values it holds and leaves the others empty, so a test that wants one value asks the
//! peers in turn until one holds it.

use medledger_proto::v1;
use medledger_sdk::peer::PeerSet;
use prost::Message;

/// `access_keys` with `args`, as `peers`' wallet asks it, from the first peer whose answer
/// `holds` the value the test wants.
///
/// # Panics
/// No peer's answer holds it, or an answer does not decode.
pub async fn held(
    peers: &PeerSet,
    args: v1::AccessKeysArgs,
    holds: impl Fn(&v1::AccessKeysResult) -> bool + Sync,
) -> v1::AccessKeysResult {
    let answer = peers
        .query_until("access_keys", args.encode_to_vec(), |answer| {
            let keys = v1::AccessKeysResult::decode(answer.result.as_slice())
                .map_err(|e| e.to_string())?;
            if holds(&keys) {
                Ok(())
            } else {
                Err("this peer does not hold the value".into())
            }
        })
        .await
        .unwrap();
    v1::AccessKeysResult::decode(answer.result.as_slice()).unwrap()
}
