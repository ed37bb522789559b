//! Byte layouts against `include/uapi/linux/fuse.h` (7.42): the offsets below are
//! those of the C structs, written out by hand from the header.
use super::*;
use crate::fuse::flags::fopen;
use crate::overlay::{Attr, FileKind, Timespec};
use std::time::Duration;

fn header(opcode: u32, len: u32) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&len.to_le_bytes());
    h.extend_from_slice(&opcode.to_le_bytes());
    h.extend_from_slice(&77u64.to_le_bytes()); // unique
    h.extend_from_slice(&5u64.to_le_bytes()); // nodeid
    h.extend_from_slice(&1000u32.to_le_bytes());
    h.extend_from_slice(&100u32.to_le_bytes());
    h.extend_from_slice(&4242u32.to_le_bytes());
    h.extend_from_slice(&[0u8; 4]); // total_extlen, padding
    h
}

fn msg(opcode: u32, arg: &[u8], payload: &[u8]) -> Vec<u8> {
    let len = (IN_HEADER_LEN + arg.len() + payload.len()) as u32;
    let mut m = header(opcode, len);
    m.extend_from_slice(arg);
    m.extend_from_slice(payload);
    m
}

fn le(fields: &[(u64, usize)]) -> Vec<u8> {
    let mut v = Vec::new();
    for &(x, n) in fields {
        v.extend_from_slice(&x.to_le_bytes()[..n]);
    }
    v
}

#[test]
fn in_header_layout() {
    let m = header(opcode::LOOKUP, 45);
    assert_eq!(m.len(), IN_HEADER_LEN);
    let h = InHeader::parse(&m).unwrap();
    assert_eq!(
        h,
        InHeader {
            len: 45,
            opcode: 1,
            unique: 77,
            nodeid: 5,
            uid: 1000,
            gid: 100,
            pid: 4242,
            total_extlen: 0
        }
    );
    assert_eq!(InHeader::parse(&m[..39]), Err(Malformed));
}

#[test]
fn lookup_has_no_fixed_argument() {
    let m = msg(opcode::LOOKUP, &[], b"name\0");
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Lookup {
            name: OsStr::new("name")
        }
    );
    // Without the NUL the name is malformed, not read past the end.
    let m = msg(opcode::LOOKUP, &[], b"name");
    assert_eq!(parse_message(&m).err(), Some(Malformed));
}

#[test]
fn setattr_in_layout() {
    // valid, padding, fh, size, lock_owner, atime, mtime, ctime, atimensec,
    // mtimensec, ctimensec, mode, unused4, uid, gid, unused5
    let arg = le(&[
        (
            fattr::MODE as u64 | fattr::SIZE as u64 | fattr::KILL_SUIDGID as u64,
            4,
        ),
        (0, 4),
        (9, 8),
        (4096, 8),
        (0, 8),
        (11, 8),
        (12, 8),
        (13, 8),
        (21, 4),
        (22, 4),
        (23, 4),
        (0o104755, 4),
        (0, 4),
        (1001, 4),
        (1002, 4),
        (0, 4),
    ]);
    assert_eq!(arg.len(), op_in_size(opcode::SETATTR));
    let m = msg(opcode::SETATTR, &arg, &[]);
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Setattr(SetattrIn {
            valid: fattr::MODE | fattr::SIZE | fattr::KILL_SUIDGID,
            fh: 9,
            size: 4096,
            atime: 11,
            mtime: 12,
            atimensec: 21,
            mtimensec: 22,
            mode: 0o104755,
            uid: 1001,
            gid: 1002,
        })
    );
}

#[test]
fn write_in_layout_and_data() {
    // fh, offset, size, write_flags, lock_owner, flags, padding
    let arg = le(&[
        (3, 8),
        (8192, 8),
        (5, 4),
        (WRITE_KILL_SUIDGID as u64, 4),
        (0, 8),
        (2, 4),
        (0, 4),
    ]);
    assert_eq!(arg.len(), op_in_size(opcode::WRITE));
    let m = msg(opcode::WRITE, &arg, b"hello");
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Write {
            fh: 3,
            offset: 8192,
            write_flags: WRITE_KILL_SUIDGID,
            data: b"hello"
        }
    );
    // A size beyond the data is malformed.
    let arg = le(&[(3, 8), (0, 8), (6, 4), (0, 4), (0, 8), (0, 4), (0, 4)]);
    assert!(parse_message(&msg(opcode::WRITE, &arg, b"hello")).is_err());
}

#[test]
fn create_open_rename_layouts() {
    let arg = le(&[
        (0o101, 4),
        (0o100644, 4),
        (0o022, 4),
        (OPEN_KILL_SUIDGID as u64, 4),
    ]);
    assert_eq!(arg.len(), op_in_size(opcode::CREATE));
    let m = msg(opcode::CREATE, &arg, b"f\0");
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Create {
            flags: 0o101,
            mode: 0o100644,
            umask: 0o022,
            open_flags: OPEN_KILL_SUIDGID,
            name: OsStr::new("f")
        }
    );
    let arg = le(&[(0o1002, 4), (OPEN_KILL_SUIDGID as u64, 4)]);
    let m = msg(opcode::OPEN, &arg, &[]);
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Open {
            flags: 0o1002,
            open_flags: OPEN_KILL_SUIDGID
        }
    );
    let arg = le(&[(7, 8), (1, 4), (0, 4)]);
    let m = msg(opcode::RENAME2, &arg, b"a\0b\0");
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Rename {
            newdir: 7,
            flags: 1,
            name: OsStr::new("a"),
            newname: OsStr::new("b")
        }
    );
    let m = msg(opcode::SYMLINK, &[], b"l\0/t\0");
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Symlink {
            name: OsStr::new("l"),
            target: OsStr::new("/t")
        }
    );
}

#[test]
fn init_in_layout() {
    // major, minor, max_readahead, flags, flags2, unused[11]
    let mut arg = le(&[(7, 4), (45, 4), (131072, 4), (1 << 30 | 1, 4), (1 << 9, 4)]);
    arg.extend_from_slice(&[0u8; 44]);
    assert_eq!(arg.len(), op_in_size(opcode::INIT));
    let m = msg(opcode::INIT, &arg, &[]);
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::Init {
            major: 7,
            minor: 45,
            max_readahead: 131072,
            flags: init::INIT_EXT | init::ASYNC_READ | init::OVER_IO_URING
        }
    );
}

#[test]
fn batch_forget_layout() {
    let arg = le(&[(2, 4), (0, 4)]);
    let payload = le(&[(10, 8), (1, 8), (11, 8), (3, 8)]);
    let m = msg(opcode::BATCH_FORGET, &arg, &payload);
    let (_, r) = parse_message(&m).unwrap();
    assert_eq!(
        r,
        Request::BatchForget {
            forgets: vec![
                ForgetOne {
                    nodeid: 10,
                    nlookup: 1
                },
                ForgetOne {
                    nodeid: 11,
                    nlookup: 3
                }
            ]
        }
    );
    // A count beyond the message is malformed.
    let arg = le(&[(3, 4), (0, 4)]);
    assert!(parse_message(&msg(opcode::BATCH_FORGET, &arg, &payload)).is_err());
}

fn attr() -> Attr {
    Attr {
        ino: crate::overlay::NodeId::new(42),
        kind: FileKind::Regular,
        perm: 0o4755,
        nlink: 2,
        uid: 1000,
        gid: 100,
        rdev: 0,
        size: 12345,
        blocks: 24,
        blksize: 4096,
        atime: Timespec { sec: 1, nsec: 2 },
        mtime: Timespec { sec: 3, nsec: 4 },
        ctime: Timespec { sec: 5, nsec: 6 },
        volatile: false,
    }
}

#[test]
fn entry_out_layout() {
    let mut buf = [0u8; 256];
    let mut o = Out::new(&mut buf);
    assert!(put_entry(&mut o, Some(&attr()), 9, Duration::new(86400, 5)));
    assert_eq!(o.len(), 128);
    let expect = le(&[
        (42, 8),
        (9, 8),
        (86400, 8),
        (86400, 8),
        (5, 4),
        (5, 4),
        // fuse_attr: ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec,
        // ctimensec, mode, nlink, uid, gid, rdev, blksize, flags
        (42, 8),
        (12345, 8),
        (24, 8),
        (1, 8),
        (3, 8),
        (5, 8),
        (2, 4),
        (4, 4),
        (6, 4),
        (0o104755, 4),
        (2, 4),
        (1000, 4),
        (100, 4),
        (0, 4),
        (4096, 4),
        (0, 4),
    ]);
    assert_eq!(&buf[..128], &expect[..]);
}

#[test]
fn attr_open_write_statfs_init_sizes() {
    let mut buf = [0u8; 256];
    let mut o = Out::new(&mut buf);
    assert!(put_attr_out(&mut o, &attr(), Duration::from_secs(1)));
    assert_eq!(o.len(), 104);
    let mut o = Out::new(&mut buf);
    assert!(put_open(&mut o, 7, fopen::PASSTHROUGH, 3));
    assert_eq!(o.len(), 16);
    assert_eq!(&buf[..16], &le(&[(7, 8), (128, 4), (3, 4)])[..]);
    let mut o = Out::new(&mut buf);
    assert!(put_write(&mut o, 5));
    assert_eq!(o.len(), 8);
    let mut o = Out::new(&mut buf);
    let s = crate::overlay::FsStats {
        blocks: 1,
        bfree: 2,
        bavail: 3,
        files: 4,
        ffree: 5,
        bsize: 6,
        namelen: 7,
        frsize: 8,
    };
    assert!(put_statfs(&mut o, &s));
    assert_eq!(o.len(), 80);
    let mut o = Out::new(&mut buf);
    let i = InitOut {
        minor: 42,
        max_readahead: 1 << 20,
        flags: init::INIT_EXT | init::OVER_IO_URING | init::ASYNC_READ,
        max_background: 64,
        congestion_threshold: 48,
        max_write: 1 << 20,
        max_pages: 256,
        max_stack_depth: 1,
    };
    assert!(put_init(&mut o, &i));
    assert_eq!(o.len(), 64);
    // flags at 12, max_background at 16, max_write at 20, max_pages at 28,
    // flags2 at 32, max_stack_depth at 36.
    assert_eq!(&buf[12..16], &((1u32 << 30) | 1).to_le_bytes());
    assert_eq!(&buf[16..18], &64u16.to_le_bytes());
    assert_eq!(&buf[20..24], &(1u32 << 20).to_le_bytes());
    assert_eq!(&buf[28..30], &256u16.to_le_bytes());
    assert_eq!(&buf[32..36], &(1u32 << 9).to_le_bytes());
    assert_eq!(&buf[36..40], &1u32.to_le_bytes());
}

#[test]
fn dirents_are_padded_and_never_overflow() {
    let mut buf = [0xffu8; 64];
    let mut o = Out::new(&mut buf);
    assert!(put_dirent(
        &mut o,
        5,
        1,
        FileKind::Directory,
        OsStr::new("abc")
    ));
    assert_eq!(o.len(), 32);
    assert!(!put_dirent(
        &mut o,
        6,
        2,
        FileKind::Regular,
        OsStr::new("0123456789")
    ));
    assert_eq!(o.len(), 32);
    assert_eq!(
        &buf[..32],
        &[
            le(&[(5, 8), (1, 8), (3, 4), (4, 4)]),
            b"abc\0\0\0\0\0".to_vec()
        ]
        .concat()[..]
    );
    let mut buf = [0u8; 150];
    let mut o = Out::new(&mut buf);
    assert!(!put_direntplus(
        &mut o,
        &attr(),
        1,
        OsStr::new("x"),
        Duration::ZERO
    ));
    assert_eq!(o.len(), 0);
}

#[test]
fn ring_header_and_command_layout() {
    assert_eq!(ring::REQ_HEADER_SZ, 288);
    let c = ring::cmd_req(0x1122, 1);
    assert_eq!(&c[..8], &[0u8; 8]);
    assert_eq!(&c[8..16], &0x1122u64.to_le_bytes());
    assert_eq!(&c[16..18], &1u16.to_le_bytes());
    let mut h = [0u8; ring::REQ_HEADER_SZ];
    ring::set_payload_sz(&mut h, 99, 4096);
    assert_eq!(ring::ent_in(&h), Some((99, 4096)));
    assert_eq!(&h[256 + 8..256 + 16], &99u64.to_le_bytes());
    assert_eq!(&h[256 + 16..256 + 20], &4096u32.to_le_bytes());
}

#[test]
fn notify_inval_inode_layout() {
    let m = notify_inval_inode(8, 0, -1);
    assert_eq!(&m[..16], &out_header(40, 2, 0));
    assert_eq!(&m[16..40], &le(&[(8, 8), (0, 8), (u64::MAX, 8)])[..]);
}

#[test]
fn notify_inval_entry_layout() {
    let m = notify_inval_entry(8, b"ab");
    assert_eq!(&m[..16], &out_header(35, 3, 0));
    assert_eq!(&m[16..32], &le(&[(8, 8), (2, 4), (0, 4)])[..]);
    assert_eq!(&m[32..], b"ab\0");
}

#[test]
fn notify_inc_epoch_layout() {
    // `struct fuse_out_header` only: len 16, error = FUSE_NOTIFY_INC_EPOCH (8), unique 0.
    assert_eq!(notify_inc_epoch(), out_header(16, 8, 0));
    assert_eq!(&notify_inc_epoch()[..8], &le(&[(16, 4), (8, 4)])[..]);
}
