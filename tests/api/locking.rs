//! Lock rules the union promises: no data copy while the tree lock is held for writing.

use crate::common::blocking_lower::{self, BIG_SIZE, OTHER_DATA, big_byte};
use crate::common::{self, DEADLINE, TempDir};
use layerfuse::overlay::{NodeId, Overlay, OverlayConfig};
use std::fs;
use std::sync::{Arc, mpsc};

/// A rename of a large lower file copies it up first. While that copy waits for the
/// lower layer's data, a stat elsewhere in the tree completes: the rename took the tree
/// lock for the move only. (Ordering, not timing: the lower layer holds every read of
/// the file until the test lets it go, so the copy is in progress for as long as the
/// test wants.)
#[test]
fn a_stat_elsewhere_completes_while_a_rename_copies_a_large_lower_file() {
    if !common::require_root_and_fuse() {
        return;
    }
    let tmp = TempDir::new();
    let (lower, upper, work) = (
        tmp.path.join("lower"),
        tmp.path.join("upper"),
        tmp.path.join("work"),
    );
    for d in [&lower, &upper, &work] {
        fs::create_dir(d).expect("layer dir");
    }
    let blocking = blocking_lower::Mounted::mount(&lower);
    let ov = Arc::new(
        Overlay::new(&OverlayConfig {
            lowers: vec![lower.clone()],
            upper: Some((upper.clone(), work.clone())),
            redirect_dir: true,
            metacopy: false,
            userxattr: true,
            volatile: true,
            ownership: Default::default(),
            grafts: Vec::new(),
            override_stat: None,
        })
        .expect("open the union"),
    );
    let renamer = {
        let ov = ov.clone();
        std::thread::spawn(move || {
            ov.rename(
                NodeId::ROOT,
                "big".as_ref(),
                NodeId::ROOT,
                "moved".as_ref(),
                0,
            )
        })
    };
    let copying = blocking.gate.wait_for_read(DEADLINE);
    // Elsewhere in the tree, while the copy waits: a lookup and a stat.
    let (tx, rx) = mpsc::channel();
    let stat = {
        let ov = ov.clone();
        std::thread::spawn(move || {
            let r = ov
                .lookup(NodeId::ROOT, "other".as_ref())
                .and_then(|(a, _)| ov.getattr(a.ino, None));
            let _ = tx.send(r.map(|a| a.size));
        })
    };
    let during_copy = rx.recv_timeout(DEADLINE);
    let copy_still_waiting = blocking.gate.held() > 0;
    blocking.gate.release();
    let renamed = renamer.join().expect("rename thread");
    stat.join().expect("stat thread");
    assert!(copying, "the rename never read the lower file's data");
    assert!(
        matches!(during_copy, Ok(Ok(n)) if n == OTHER_DATA.len() as u64),
        "a stat elsewhere did not complete while the rename was copying \
         (the tree lock was held across the data copy): {during_copy:?}"
    );
    assert!(copy_still_waiting, "the copy finished before the stat did");
    renamed.expect("rename");
    let data = fs::read(upper.join("moved")).expect("the moved copy in the upper");
    assert_eq!(data.len() as u64, BIG_SIZE);
    assert!(
        data.iter()
            .enumerate()
            .all(|(i, &b)| b == big_byte(i as u64)),
        "the copy's data differs from the lower file's"
    );
    drop(ov);
}
