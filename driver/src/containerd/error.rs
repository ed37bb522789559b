//! The snapshotter's errors, each mapped to the gRPC code containerd turns back into its own
//! error kinds (errdefs): NotFound, AlreadyExists, FailedPrecondition, InvalidArgument.

use std::fmt;

#[derive(Debug)]
pub enum SnapError {
    NotFound(String),
    AlreadyExists(String),
    FailedPrecondition(String),
    InvalidArgument(String),
    Internal(String),
}

impl fmt::Display for SnapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapError::NotFound(m)
            | SnapError::AlreadyExists(m)
            | SnapError::FailedPrecondition(m)
            | SnapError::InvalidArgument(m)
            | SnapError::Internal(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for SnapError {}

impl From<SnapError> for containerd_snapshots::tonic::Status {
    fn from(e: SnapError) -> Self {
        use containerd_snapshots::tonic::Status;
        match e {
            SnapError::NotFound(m) => Status::not_found(m),
            SnapError::AlreadyExists(m) => Status::already_exists(m),
            SnapError::FailedPrecondition(m) => Status::failed_precondition(m),
            SnapError::InvalidArgument(m) => Status::invalid_argument(m),
            SnapError::Internal(m) => Status::internal(m),
        }
    }
}

/// An I/O error on `what`, as an internal error naming it.
pub fn io_error(what: &str, path: &std::path::Path, e: std::io::Error) -> SnapError {
    SnapError::Internal(format!("{what} {}: {e}", path.display()))
}
