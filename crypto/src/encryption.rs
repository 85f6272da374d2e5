//! X25519 encryption keys. A person's X25519 public key travels in their enrollment
//! certificate so that others can wrap data keys to them; the private key never leaves the
//! client's wallet.

use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

/// A private X25519 key. Zeroized when dropped (x25519-dalek's `zeroize` feature).
pub struct EncryptionKey(x25519_dalek::StaticSecret);

impl EncryptionKey {
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        EncryptionKey(x25519_dalek::StaticSecret::random_from_rng(rng))
    }

    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        EncryptionKey(x25519_dalek::StaticSecret::from(bytes))
    }

    /// The 32 secret bytes, zeroized when dropped. For storing in the wallet only.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    pub fn public_key(&self) -> EncryptionPublicKey {
        EncryptionPublicKey(x25519_dalek::PublicKey::from(&self.0).to_bytes())
    }

    /// The raw X25519 function (RFC 7748) with a peer's public key.
    pub fn diffie_hellman(&self, peer: &EncryptionPublicKey) -> Zeroizing<[u8; 32]> {
        let peer = x25519_dalek::PublicKey::from(peer.0);
        Zeroizing::new(self.0.diffie_hellman(&peer).to_bytes())
    }
}

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionKey(public {})", self.public_key())
    }
}

/// A public X25519 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptionPublicKey(pub [u8; 32]);

impl EncryptionPublicKey {
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(EncryptionPublicKey)
    }

    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    /// Whether this key is of small order (RFC 7748 §6.1): every private key agrees with it
    /// on the all-zero secret, so nothing can be sealed to it. Tested as RFC 7748 says, by
    /// the all-zero output of X25519 with a fixed private key (clamping makes every scalar a
    /// multiple of the cofactor 8, which sends exactly the small-order points to zero).
    pub fn has_small_order(&self) -> bool {
        self.small_order()
    }

    /// Whether the key is one something can be encrypted to and opened by its holder: not of
    /// [small order](Self::has_small_order), and canonically encoded (the top bit, which
    /// X25519 ignores and HPKE does not, clear).
    pub fn is_usable(&self) -> bool {
        self.0[31] & 0x80 == 0 && !self.small_order()
    }

    fn small_order(&self) -> bool {
        let probe = x25519_dalek::StaticSecret::from([0x42; 32]);
        let shared = probe.diffie_hellman(&x25519_dalek::PublicKey::from(self.0));
        !shared.was_contributory()
    }
}

impl std::fmt::Display for EncryptionPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for EncryptionPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptionPublicKey({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(s: &str) -> [u8; 32] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    /// RFC 7748 §6.1: Alice and Bob's keys and their shared secret.
    #[test]
    fn rfc7748_diffie_hellman_known_answer() {
        let alice = EncryptionKey::from_bytes(array(
            "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
        ));
        let bob = EncryptionKey::from_bytes(array(
            "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
        ));
        assert_eq!(
            alice.public_key().to_string(),
            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
        );
        assert_eq!(
            bob.public_key().to_string(),
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
        );
        let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
        assert_eq!(
            hex::encode(*alice.diffie_hellman(&bob.public_key())),
            shared
        );
        assert_eq!(
            hex::encode(*bob.diffie_hellman(&alice.public_key())),
            shared
        );
    }

    #[test]
    fn secret_bytes_round_trip() {
        let key = EncryptionKey::from_bytes([5; 32]);
        let again = EncryptionKey::from_bytes(*key.to_bytes());
        assert_eq!(key.public_key(), again.public_key());
        assert!(EncryptionPublicKey::from_slice(&[0; 31]).is_none());
    }
}
