//! Minimal reproducers printed by the runner, pasted here as they were printed. Each runs kernel
//! overlayfs against `LAYERFUSE_FUZZ_IMPL` (default layerfuse) and fails on any difference.
#![allow(unused_imports)]

use super::layers::{E, Layer};
use super::ops::{Data, Op};
use super::runner::{Case, check_case};
