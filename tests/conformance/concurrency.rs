//! Concurrent random sequences on one mount.
