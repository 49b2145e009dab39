//! Why a bridge operation failed.

use crate::matrix::MatrixError;
use crate::store::StoreError;

/// Why a bridge operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The homeserver refused or could not be reached.
    #[error(transparent)]
    Matrix(#[from] MatrixError),
    /// No portal is known for this remote chat.
    #[error("no portal for the remote chat {0:?}")]
    UnknownPortal(String),
    /// A remote id makes no valid Matrix id.
    #[error("the remote id {id:?} makes no valid Matrix id: {reason}")]
    InvalidRemoteId {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },
    /// The request cannot be done, for the reason given (for people).
    #[error("{0}")]
    Refused(String),
    /// The connector failed.
    #[error(transparent)]
    Connector(#[from] crate::connector::ConnectorError),
}

impl BridgeError {
    /// Whether trying again later may succeed (the homeserver or database was away).
    pub fn is_transient(&self) -> bool {
        match self {
            BridgeError::Store(_) => true,
            BridgeError::Matrix(error) => matrix_is_transient(error),
            BridgeError::Connector(crate::connector::ConnectorError::Retry(_)) => true,
            _ => false,
        }
    }
}

/// Whether a homeserver failure may pass: it could not be reached, or kept failing
/// with 5xx or 429 until the retries ran out.
pub(crate) fn matrix_is_transient(error: &MatrixError) -> bool {
    matches!(
        error,
        MatrixError::Exhausted { .. } | MatrixError::Unavailable { .. } | MatrixError::Client(_)
    )
}
