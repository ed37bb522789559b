//! File I/O through the union: sync calls, fallocate, locks, mmap, O_APPEND/O_TRUNC/O_DIRECT,
//! copy_file_range.

use crate::common::*;
use crate::need_root;
use std::fs;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};

fn io_layers() -> Layers {
    let l = Layers::new(2);
    l.lower(1)
        .file("lower", "0123456789")
        .file("d/lower2", "abcdefghij");
    l.lower(0).file_bytes("big", &vec![7u8; 1 << 20]);
    l.upper().file("upper", "upper data");
    l
}

fn errno_of(r: libc::c_int) -> String {
    if r == 0 {
        "ok".into()
    } else {
        errno_name(std::io::Error::last_os_error())
    }
}

#[test]
fn fsync_fdatasync_syncfs() {
    need_root!();
    differential(&io_layers(), |c| {
        for n in ["lower", "upper", "new"] {
            let mut f = c.must(
                &format!("open {n}"),
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(c.p(n)),
            );
            c.must("write", f.write_all(b"+synced"));
            c.ok("fsync", f.sync_all());
            c.ok("fdatasync", f.sync_data());
            // SAFETY: syncfs on an fd we own.
            c.val("syncfs", errno_of(unsafe { libc::syncfs(f.as_raw_fd()) }));
            c.read(n);
        }
        let d = c.must("open dir", fs::File::open(c.p("d")));
        c.ok("fsync dir", d.sync_all());
        let r = c.must("open read-only", fs::File::open(c.p("d/lower2")));
        c.ok("fsync read-only lower fd", r.sync_all());
        c.in_upper("d/lower2");
    });
}

#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "fallocate is not offered by the portable OS module (EOPNOTSUPP)"
)]
fn fallocate_modes() {
    need_root!();
    differential(&io_layers(), |c| {
        let f = c.must(
            "open big",
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(c.p("big")),
        );
        let fd = f.as_raw_fd();
        // SAFETY: fallocate on an fd we own.
        unsafe {
            c.val("extend", errno_of(libc::fallocate(fd, 0, 0, 2 << 20)));
            c.val(
                "keep size",
                errno_of(libc::fallocate(fd, libc::FALLOC_FL_KEEP_SIZE, 0, 4 << 20)),
            );
            c.val(
                "punch hole",
                errno_of(libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    4096,
                    8192,
                )),
            );
            c.val(
                "zero range",
                errno_of(libc::fallocate(fd, libc::FALLOC_FL_ZERO_RANGE, 65536, 4096)),
            );
        }
        c.stat("big");
        c.read("big");
        let ro = fs::File::open(c.p("lower")).unwrap();
        // SAFETY: fallocate on an fd we own (opened read-only: must fail EBADF).
        c.val(
            "fallocate on O_RDONLY fd",
            errno_of(unsafe { libc::fallocate(ro.as_raw_fd(), 0, 0, 100) }),
        );
        c.in_upper("lower");
    });
}

#[test]
fn flock_and_posix_locks() {
    need_root!();
    let p = Pair::new(&io_layers());
    p.check(|c| {
        let a = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(c.p("lower"))
            .unwrap();
        let b = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(c.p("lower"))
            .unwrap();
        // SAFETY: flock/fcntl on fds we own, with a zeroed-then-filled flock struct.
        unsafe {
            c.val(
                "flock EX a",
                errno_of(libc::flock(a.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
            );
            c.val(
                "flock EX b conflicts",
                errno_of(libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
            );
            c.val(
                "flock SH b conflicts",
                errno_of(libc::flock(b.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB)),
            );
            c.val(
                "unlock a",
                errno_of(libc::flock(a.as_raw_fd(), libc::LOCK_UN)),
            );
            c.val(
                "flock EX b now",
                errno_of(libc::flock(b.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB)),
            );
            libc::flock(b.as_raw_fd(), libc::LOCK_UN);

            let lock = |ty: i32, start: i64, len: i64| {
                let mut l: libc::flock = std::mem::zeroed();
                l.l_type = ty as i16;
                l.l_whence = libc::SEEK_SET as i16;
                l.l_start = start;
                l.l_len = len;
                l
            };
            // Open-file-description locks: a and b are different owners within one process.
            let mut wl = lock(libc::F_WRLCK, 0, 5);
            c.val(
                "OFD setlk a [0,5)",
                errno_of(libc::fcntl(a.as_raw_fd(), libc::F_OFD_SETLK, &mut wl)),
            );
            let mut wl2 = lock(libc::F_WRLCK, 2, 2);
            c.val(
                "OFD setlk b overlapping",
                errno_of(libc::fcntl(b.as_raw_fd(), libc::F_OFD_SETLK, &mut wl2)),
            );
            let mut probe = lock(libc::F_WRLCK, 0, 10);
            c.val(
                "OFD getlk b",
                errno_of(libc::fcntl(b.as_raw_fd(), libc::F_OFD_GETLK, &mut probe)),
            );
            c.val(
                "OFD getlk reports conflict",
                (
                    probe.l_type as i32 == libc::F_WRLCK,
                    probe.l_start,
                    probe.l_len,
                ),
            );
            let mut wl3 = lock(libc::F_WRLCK, 5, 5);
            c.val(
                "OFD setlk b disjoint",
                errno_of(libc::fcntl(b.as_raw_fd(), libc::F_OFD_SETLK, &mut wl3)),
            );
            let mut un = lock(libc::F_UNLCK, 0, 0);
            c.val(
                "OFD unlock a",
                errno_of(libc::fcntl(a.as_raw_fd(), libc::F_OFD_SETLK, &mut un)),
            );
            let mut un = lock(libc::F_UNLCK, 0, 0);
            c.val(
                "OFD unlock b",
                errno_of(libc::fcntl(b.as_raw_fd(), libc::F_OFD_SETLK, &mut un)),
            );
            // Classic POSIX locks: same process, so no conflict with itself.
            let mut pl = lock(libc::F_WRLCK, 0, 0);
            c.val(
                "F_SETLK a",
                errno_of(libc::fcntl(a.as_raw_fd(), libc::F_SETLK, &mut pl)),
            );
            let mut pq = lock(libc::F_WRLCK, 0, 0);
            c.val(
                "F_GETLK same process",
                errno_of(libc::fcntl(b.as_raw_fd(), libc::F_GETLK, &mut pq)),
            );
            c.val(
                "F_GETLK unlocked for owner",
                pq.l_type as i32 == libc::F_UNLCK,
            );
        }
    });
}

#[test]
fn mmap_shared_writable() {
    need_root!();
    differential(&io_layers(), |c| {
        fs::write(c.p("created"), vec![b'c'; 8192]).unwrap();
        for n in ["lower", "created", "upper"] {
            let f = fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(c.p(n))
                .unwrap();
            let len = f.metadata().unwrap().len() as usize;
            // SAFETY: a shared mapping of a file we hold open, written within its length and
            // unmapped before the file is closed.
            unsafe {
                let m = libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                );
                c.val(&format!("mmap {n}"), m != libc::MAP_FAILED);
                if m != libc::MAP_FAILED {
                    std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), m.cast::<u8>().add(1), 6);
                    c.val("msync", errno_of(libc::msync(m, len, libc::MS_SYNC)));
                    libc::munmap(m, len);
                }
            }
            drop(f);
            c.read(n);
        }
        // A private mapping of a lower file must not copy it up.
        let f = fs::File::open(c.p("d/lower2")).unwrap();
        // SAFETY: a private read-only mapping of 10 bytes, unmapped right away.
        unsafe {
            let m = libc::mmap(
                std::ptr::null_mut(),
                10,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                f.as_raw_fd(),
                0,
            );
            c.val("private read mapping", m != libc::MAP_FAILED);
            libc::munmap(m, 10);
        }
        c.in_upper("d/lower2");
    });
}

#[test]
fn append_and_trunc() {
    need_root!();
    differential(&io_layers(), |c| {
        let mut f = c.must(
            "open O_APPEND lower",
            fs::OpenOptions::new().append(true).open(c.p("lower")),
        );
        c.must("append", f.write_all(b"AP"));
        c.ok(
            "pwrite at 0 with O_APPEND appends",
            f.write_at(b"XY", 0).map(|_| ()),
        );
        drop(f);
        c.read("lower");
        let f = c.must(
            "open O_TRUNC lower",
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(c.p("d/lower2")),
        );
        c.val("size after O_TRUNC", f.metadata().unwrap().size());
        drop(f);
        c.read("d/lower2");
        c.must("O_TRUNC|O_CREAT new", fs::write(c.p("t"), "abc"));
        c.must("O_TRUNC existing upper", fs::write(c.p("upper"), "x"));
        c.read("upper");
        let mut f = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(c.p("big"))
            .unwrap();
        c.must(
            "write past EOF",
            f.write_at(b"END", (1 << 20) + 10000).map(drop),
        );
        let mut s = Vec::new();
        f.read_to_end(&mut s).unwrap();
        c.val("read all", describe_bytes(&s));
        c.stat("big");
    });
}

#[test]
fn o_direct_open_and_read() {
    need_root!();
    differential(&io_layers(), |c| {
        for n in ["big", "upper"] {
            let fd = c.ok(
                &format!("open {n} O_DIRECT"),
                open(&c.p(n), libc::O_RDONLY | libc::O_DIRECT, 0),
            );
            if let Some(fd) = fd {
                let layout = std::alloc::Layout::from_size_align(4096, 4096).unwrap();
                // SAFETY: an aligned 4 KiB buffer, read into by the kernel, then freed.
                unsafe {
                    let buf = std::alloc::alloc_zeroed(layout);
                    let r = libc::pread(fd.as_raw_fd(), buf.cast(), 4096, 0);
                    c.val("aligned O_DIRECT pread", r);
                    std::alloc::dealloc(buf, layout);
                }
            }
        }
        c.ok(
            "open lower O_DIRECT|O_WRONLY",
            open(&c.p("lower"), libc::O_WRONLY | libc::O_DIRECT, 0),
        );
        c.in_upper("lower");
    });
}

#[test]
fn copy_file_range_between_layers() {
    need_root!();
    differential(&io_layers(), |c| {
        let src = fs::File::open(c.p("big")).unwrap();
        let dst = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(c.p("copy"))
            .unwrap();
        let mut total = 0i64;
        loop {
            // SAFETY: copy_file_range between two fds we own, kernel-managed offsets.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    std::ptr::null_mut(),
                    dst.as_raw_fd(),
                    std::ptr::null_mut(),
                    1 << 20,
                    0,
                )
            };
            if n <= 0 {
                c.val(
                    "copy_file_range end",
                    if n == 0 {
                        "eof".into()
                    } else {
                        errno_name(std::io::Error::last_os_error())
                    },
                );
                break;
            }
            total += n as i64;
        }
        c.val("copied bytes", total);
        drop(dst);
        c.read("copy");
        c.in_upper("big");
        // Into a lower file (copy-up of the destination), at an offset.
        let dst = fs::OpenOptions::new()
            .write(true)
            .open(c.p("lower"))
            .unwrap();
        let mut off_in: i64 = 0;
        let mut off_out: i64 = 4;
        // SAFETY: as above, with explicit offsets.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                3,
                0,
            )
        };
        c.val("copy_file_range into lower file", n);
        drop(dst);
        c.read("lower");
    });
}

/// The passthrough trap (fuse-overlayfs 2.0 loses data here): a reader holds the lower
/// file open, a writer opens it with O_TRUNC (copy-up) and writes. The writer's data must
/// reach the upper file, and the reader then reads what the kernel's reader reads. The
/// same through a shared writable mmap while the reader is open.
#[test]
fn reader_open_before_copy_up_does_not_lose_the_writers_data() {
    need_root!();
    differential(&io_layers(), |c| {
        let reader = c.must("open reader", fs::File::open(c.p("lower")));
        let mut w = c.must(
            "open O_TRUNC writer",
            fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(c.p("lower")),
        );
        c.ok("write", w.write_all(b"new data"));
        drop(w);
        let mut buf = vec![0u8; 32];
        let n = reader.read_at(&mut buf, 0).map_err(|e| errno_name(&e));
        c.val(
            "reader sees",
            n.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()),
        );
        c.read("lower");
        c.in_upper("lower");

        let reader2 = c.must("open reader of d/lower2", fs::File::open(c.p("d/lower2")));
        let f = c.must(
            "open d/lower2 rw",
            fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(c.p("d/lower2")),
        );
        // SAFETY: a shared writable mapping of 10 bytes of a file we hold open; unmapped below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                10,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        c.val("mmap", map != libc::MAP_FAILED);
        if map != libc::MAP_FAILED {
            // SAFETY: the mapping is 10 bytes long and writable.
            unsafe { std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), map.cast::<u8>(), 6) };
            // SAFETY: flush and unmap the mapping made above.
            unsafe {
                libc::msync(map, 10, libc::MS_SYNC);
                libc::munmap(map, 10);
            }
        }
        drop(f);
        let mut buf = vec![0u8; 32];
        let n = reader2.read_at(&mut buf, 0).map_err(|e| errno_name(&e));
        c.val(
            "reader2 sees",
            n.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned()),
        );
        c.read("d/lower2");
    });
}

/// A terminal probe (`isatty`, TCGETS) on files of every layer gets ENOTTY, as on the
/// kernel's overlay of ext4, and the daemon answers it without logging anything.
#[test]
fn terminal_probe_gets_enotty() {
    need_root!();
    differential(&io_layers(), |c| {
        for n in ["lower", "upper", "new"] {
            let f = c.must(
                &format!("open {n}"),
                fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(c.p(n)),
            );
            let mut t = std::mem::MaybeUninit::<libc::termios>::uninit();
            // SAFETY: TCGETS on an fd we own, into a termios-sized buffer.
            let r = unsafe { libc::ioctl(f.as_raw_fd(), libc::TCGETS, t.as_mut_ptr()) };
            c.val(&format!("TCGETS {n}"), errno_of(r));
        }
    });
    let m = TestMount::layerfuse(io_layers(), &Opts::default());
    let f = fs::File::open(m.path("lower")).expect("open lower");
    // SAFETY: isatty on an fd we own.
    assert_eq!(unsafe { libc::isatty(f.as_raw_fd()) }, 0);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ENOTTY)
    );
    let log = m.stderr();
    assert!(!log.contains("ioctl"), "daemon logged the probe: {log}");
}

/// A union without an upper can never copy a file up, so layerfuse lets the kernel read its
/// lower files directly (FUSE passthrough): the bytes are the kernel overlayfs's (whole
/// reads, preads across and past the end, the shadowed and the deeper layer), and the daemon
/// sees no READ for them.
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "no FUSE passthrough on the portable path (FreeBSD and macOS have none)"
)]
fn a_union_without_an_upper_reads_lower_files_directly() {
    need_root!();
    let l = Layers::read_only(2);
    let big: Vec<u8> = (0..(3u32 << 20) + 123).map(|i| (i % 251) as u8).collect();
    l.lower(0).file_bytes("big", &big).file("small", "top");
    l.lower(1)
        .file("small", "shadowed")
        .file("deep/f", "deeper");
    let p = Pair::new(&l);
    p.check(|c| {
        let r = fs::read(c.p("big"));
        c.val("big", r.as_ref().map(|b| (b.len(), b == &big)).ok());
        let r = fs::read_to_string(c.p("small"));
        c.val("small", r.ok());
        let r = fs::read_to_string(c.p("deep/f"));
        c.val("deep/f", r.ok());
        if let Some(f) = c.ok("open big", fs::File::open(c.p("big"))) {
            for at in [0u64, 4095, 1 << 20, (3 << 20) + 100, 1 << 30] {
                let mut buf = vec![0u8; 300];
                let n = f.read_at(&mut buf, at);
                c.val(&format!("pread at {at}"), n.map(|n| buf[..n].to_vec()).ok());
            }
        }
    });
    if p.other.kind != Impl::Layerfuse {
        return;
    }
    let s = crate::status::status_json(&[p.other.mnt.as_os_str()]);
    // The right mount's counters, which saw the lookups above: a read count of 0 below means
    // the daemon served no READ, not that the JSON lacked the field.
    assert_eq!(s.as_array().map(Vec::len), Some(1), "{s}");
    assert!(
        s[0]["counters"]["requests_total"].as_u64().unwrap_or(0) > 0,
        "{s}"
    );
    assert_eq!(
        s[0]["counters"]["requests"]["read"].as_u64().unwrap_or(0),
        0,
        "the daemon served reads of lower files: {s}"
    );
}

/// A sequential reader of a lower file keeps several READs in flight: the mount's own
/// readahead window is widened past the 128 KiB a new FUSE mount gets (at 8 MiB).
#[test]
#[cfg_attr(
    feature = "portable",
    ignore = "a Linux device setting: the portable OS module (FreeBSD, macOS) has none"
)]
fn the_mount_reads_ahead_as_far_as_the_daemon() {
    need_root!();
    let m = TestMount::layerfuse(crate::cli::base(), &Opts::default());
    let dev = fs::metadata(&m.mnt).unwrap().dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let setting = format!("/sys/class/bdi/{major}:{minor}/read_ahead_kb");
    // The daemon widens the window just after its mount appears in mountinfo (which is
    // all TestMount waits for): wait for the setting, as a reader would see it a moment later.
    let mut window = String::new();
    let widened = wait_for(DEADLINE, || {
        window = fs::read_to_string(&setting)
            .unwrap_or_else(|e| panic!("the mount's device {major}:{minor}: {e}"));
        window.trim() == "8192"
    });
    assert!(
        widened,
        "{setting} is {} KiB, not 8192; daemon stderr:\n{}",
        window.trim(),
        m.stderr()
    );
}
