//! On-disk interop and remount consistency.
