//! Client errors, each with what the user can do about it.

use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("wallet {path}: {why}")]
    Wallet { path: String, why: String },
    #[error(
        "cannot reach the CA at {url}: {why}. Is `medledger-ca serve` running there, and is --ca (MEDLEDGER_CA) right?"
    )]
    Unreachable { url: String, why: String },
    #[error(
        "cannot reach the peer at {address}: {why}. Is the network up (`medledger network status`), and is --peer (MEDLEDGER_PEER) right?"
    )]
    PeerUnreachable { address: String, why: String },
    #[error(
        "no peer returned a commit proof signed by {needed} peers ({detail}). The transaction \
         may still commit once enough peers are up: resubmitting the same transaction is safe, \
         it commits at most once, and never after its expiry"
    )]
    NoQuorum { needed: usize, detail: String },
    #[error(
        "no {needed} peers gave the same answer ({detail}): ask again (peers at different \
         heights may answer differently for a moment)"
    )]
    NoAgreement { needed: usize, detail: String },
    #[error("this wallet's certificate was refused at the TLS handshake: {reason}")]
    CertificateRefused { reason: String },
    #[error("{message}")]
    Rejected {
        code: Code,
        message: String,
        hint: &'static str,
    },
    #[error("unexpected answer from the CA: {0}")]
    Protocol(String),
    #[error(
        "item {item} is TAMPERED: {why}. Nothing was decrypted; report it to the operators, \
         whose `medledger ledger verify` lists every object that does not match the ledger"
    )]
    Tampered { item: String, why: String },
    /// A study copy recorded as de-identified failed the re-check of its profile
    /// (`medledger_deid::check`): none of it was written to disk.
    #[error(
        "study copy {item} is recorded as de-identified but fails the re-check ({why}); none \
         of it was written, and the patient's trail records the incident"
    )]
    NotDeidentified { item: String, why: String },
    #[error(
        "cannot reach the storage gateway at {address}: {why}. Is it running, and is --gateway \
         (MEDLEDGER_GATEWAY) right?"
    )]
    GatewayUnreachable { address: String, why: String },
    /// Starting, checking or stopping a local network.
    #[error("{0}")]
    Network(String),
    /// `ledger verify` found blocks or objects that do not match (the report says which).
    #[error("the ledger does not verify: {0}")]
    VerificationFailed(String),
}

impl ClientError {
    pub fn wallet(path: &std::path::Path, why: impl ToString) -> Self {
        ClientError::Wallet {
            path: path.display().to_string(),
            why: why.to_string(),
        }
    }

    /// A stable, machine-readable name for `--json` output.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Usage(_) => "usage",
            ClientError::Wallet { .. } => "wallet",
            ClientError::Unreachable { .. } | ClientError::PeerUnreachable { .. } => "unreachable",
            ClientError::NoQuorum { .. } | ClientError::NoAgreement { .. } => "no_quorum",
            ClientError::CertificateRefused { .. } => "certificate_refused",
            ClientError::Rejected { code, .. } => match code {
                Code::Unauthenticated => "unauthenticated",
                Code::PermissionDenied => "permission_denied",
                Code::InvalidArgument => "invalid_argument",
                Code::AlreadyExists => "already_exists",
                Code::NotFound => "not_found",
                _ => "rejected",
            },
            ClientError::Protocol(_) => "protocol",
            ClientError::Tampered { .. } => "tampered",
            ClientError::NotDeidentified { .. } => "not_deidentified",
            ClientError::GatewayUnreachable { .. } => "unreachable",
            ClientError::Network(_) => "network",
            ClientError::VerificationFailed(_) => "verification_failed",
        }
    }

    /// What to do next, if there is something useful to say.
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            ClientError::Rejected { hint, .. } if !hint.is_empty() => Some(hint),
            ClientError::CertificateRefused { .. } => Some(
                "a revoked or expired identity cannot be renewed; ask an administrator to register it again and enroll with the new secret",
            ),
            _ => None,
        }
    }

    /// A refusal by the ledger (the chaincode or a peer), with ledger hints.
    pub fn from_ledger_status(status: tonic::Status) -> Self {
        let hint = match status.code() {
            // Blocks and the stream of every block's events (the peer's words: "... read by
            // peers and auditors only (the ledger's readers) ...").
            Code::PermissionDenied if status.message().contains("the ledger's readers") => {
                "read blocks with the wallet of an auditor the configuration names (--wallet); others see the ledger through its queries"
            }
            Code::PermissionDenied => {
                "the patient grants access (`medledger patient grant`); check the permission's window and that it was not revoked"
            }
            Code::NotFound => "check the patient's pseudonym and the item id",
            Code::InvalidArgument => "correct the argument named above and try again",
            _ => "",
        };
        Self::rejected(status, hint)
    }

    fn rejected(status: tonic::Status, hint: &'static str) -> Self {
        ClientError::Rejected {
            code: status.code(),
            message: status.message().to_string(),
            hint,
        }
    }

    pub fn from_status(status: tonic::Status) -> Self {
        let hint = match status.code() {
            Code::Unauthenticated => {
                "check the name and the secret (a secret works only as often as it was registered for), or ask an administrator to register the identity again"
            }
            Code::PermissionDenied => {
                "use the wallet of an administrator (--wallet or MEDLEDGER_WALLET)"
            }
            Code::AlreadyExists => {
                "choose another name: names are never reused, even after revocation"
            }
            Code::NotFound => "list identities with `medledger admin identities`",
            Code::InvalidArgument => "correct the argument named above and try again",
            _ => "",
        };
        Self::rejected(status, hint)
    }
}
