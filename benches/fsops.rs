//! Timing helper for `scripts/bench.sh`.
//!
//! Each measuring subcommand does one filesystem operation pattern and prints the elapsed
//! wall-clock seconds (and a count where useful) on stdout, so that process start-up and
//! shell overhead stay out of the figures. It only uses `std`, so the script can build it
//! with a bare `rustc -O` in a second; it is also a `harness = false` bench target so that
//! `cargo clippy --all-targets` lints it. Run without arguments (as `cargo bench` does),
//! it prints its usage and exits 0.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

const USAGE: &str = "\
usage: fsops COMMAND ARGS...
fixture building:
  mkfiles DIR PREFIX START END MAXSIZE SEED  files PREFIX<i:05> for i in START..END, 0..=MAXSIZE bytes
  mkempty DIR NDIRS NFILES                    DIR/d<j:04>/f<i:04>, empty files
measuring (print seconds, then a count where there is one):
  walk ROOT...               recursive readdir + lstat of every entry (like find -printf %s)
  readdir DIR                list DIR, no stat
  statlist PREFIX LISTFILE   lstat PREFIX/<line> for each line
  create DIR N SIZE [PFX]    N x (create, write SIZE bytes, close)
  unlink DIR N [PFX]         unlink the N files made by create
  write FILE MIB             new file, MIB x 1 MiB writes, open to close
  append FILE                open O_APPEND, write 1 byte, close
  chmod FILE MODE            chmod (octal mode)
  chown FILE UID GID         chown
  touch FILE                 utimensat(now)
  renamelist PREFIX LIST     rename PREFIX/<line> to PREFIX/<line>.mv
  unlinklist PREFIX LIST     unlink PREFIX/<line>
  waitmount MNT PID SECS     poll mountinfo until MNT is a mount point; fail if PID dies first
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args[0].starts_with("--") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fsops {}: {e}", args[0]);
            ExitCode::FAILURE
        }
    }
}

fn bad(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn arg(args: &[String], i: usize) -> io::Result<&str> {
    args.get(i)
        .map(String::as_str)
        .ok_or_else(|| bad("missing argument (run without arguments for usage)"))
}

fn num(args: &[String], i: usize) -> io::Result<u64> {
    arg(args, i)?
        .parse()
        .map_err(|_| bad(&format!("argument {i} is not a number")))
}

fn report(t: Duration, count: Option<u64>) {
    match count {
        Some(c) => println!("{:.6} {c}", t.as_secs_f64()),
        None => println!("{:.6}", t.as_secs_f64()),
    }
}

fn run(args: &[String]) -> io::Result<()> {
    let cmd = args[0].as_str();
    match cmd {
        "mkfiles" => mkfiles(
            Path::new(arg(args, 1)?),
            arg(args, 2)?,
            num(args, 3)?,
            num(args, 4)?,
            num(args, 5)?,
            num(args, 6)?,
        ),
        "mkempty" => mkempty(Path::new(arg(args, 1)?), num(args, 2)?, num(args, 3)?),
        "walk" => {
            if args.len() < 2 {
                return Err(bad("walk needs at least one root"));
            }
            let t = Instant::now();
            let mut n = 0;
            for root in &args[1..] {
                n += walk(Path::new(root))?;
            }
            report(t.elapsed(), Some(n));
            Ok(())
        }
        "readdir" => {
            let dir = arg(args, 1)?;
            let t = Instant::now();
            let mut n = 0;
            for e in fs::read_dir(dir)? {
                e?;
                n += 1;
            }
            report(t.elapsed(), Some(n));
            Ok(())
        }
        "statlist" => {
            let paths = read_list(arg(args, 1)?, arg(args, 2)?)?;
            let t = Instant::now();
            for p in &paths {
                fs::symlink_metadata(p)?;
            }
            report(t.elapsed(), Some(paths.len() as u64));
            Ok(())
        }
        "create" => {
            let dir = PathBuf::from(arg(args, 1)?);
            let n = num(args, 2)?;
            let buf = vec![b'x'; num(args, 3)? as usize];
            let pfx = args.get(4).map_or("c", String::as_str);
            let names: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("{pfx}{i:05}"))).collect();
            let t = Instant::now();
            for p in &names {
                let mut f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o644)
                    .open(p)?;
                f.write_all(&buf)?;
            }
            report(t.elapsed(), Some(n));
            Ok(())
        }
        "unlink" => {
            let dir = PathBuf::from(arg(args, 1)?);
            let n = num(args, 2)?;
            let pfx = args.get(3).map_or("c", String::as_str);
            let names: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("{pfx}{i:05}"))).collect();
            let t = Instant::now();
            for p in &names {
                fs::remove_file(p)?;
            }
            report(t.elapsed(), Some(n));
            Ok(())
        }
        "write" => {
            let path = arg(args, 1)?;
            let mib = num(args, 2)?;
            let buf = vec![0x5au8; 1 << 20];
            let t = Instant::now();
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(path)?;
            for _ in 0..mib {
                f.write_all(&buf)?;
            }
            drop(f);
            report(t.elapsed(), Some(mib));
            Ok(())
        }
        "append" => {
            let path = arg(args, 1)?;
            let t = Instant::now();
            let mut f = OpenOptions::new().append(true).open(path)?;
            f.write_all(b"!")?;
            drop(f);
            report(t.elapsed(), None);
            Ok(())
        }
        "chmod" => {
            let path = arg(args, 1)?;
            let mode =
                u32::from_str_radix(arg(args, 2)?, 8).map_err(|_| bad("mode is not octal"))?;
            let t = Instant::now();
            fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
            report(t.elapsed(), None);
            Ok(())
        }
        "chown" => {
            let path = arg(args, 1)?;
            let (uid, gid) = (num(args, 2)? as u32, num(args, 3)? as u32);
            let t = Instant::now();
            std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
            report(t.elapsed(), None);
            Ok(())
        }
        "touch" => {
            let c = CString::new(arg(args, 1)?.as_bytes()).map_err(|_| bad("NUL in path"))?;
            let t = Instant::now();
            touch_now(&c)?;
            report(t.elapsed(), None);
            Ok(())
        }
        "renamelist" | "unlinklist" => {
            let paths = read_list(arg(args, 1)?, arg(args, 2)?)?;
            let targets: Vec<PathBuf> = paths
                .iter()
                .map(|p| {
                    let mut s = p.clone().into_os_string();
                    s.push(".mv");
                    PathBuf::from(s)
                })
                .collect();
            let t = Instant::now();
            if cmd == "renamelist" {
                for (from, to) in paths.iter().zip(&targets) {
                    fs::rename(from, to)?;
                }
            } else {
                for p in &paths {
                    fs::remove_file(p)?;
                }
            }
            report(t.elapsed(), Some(paths.len() as u64));
            Ok(())
        }
        "waitmount" => waitmount(arg(args, 1)?, num(args, 2)?, num(args, 3)?),
        _ => Err(bad("unknown command (run without arguments for usage)")),
    }
}

/// Deterministic xorshift64: fixture contents depend only on the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn mkfiles(dir: &Path, pfx: &str, start: u64, end: u64, max: u64, seed: u64) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut buf = vec![0u8; max as usize];
    for i in start..end {
        let size = if max == 0 {
            0
        } else {
            (rng.next() % (max + 1)) as usize
        };
        for chunk in buf[..size].chunks_mut(8) {
            let v = rng.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        File::create(dir.join(format!("{pfx}{i:05}")))?.write_all(&buf[..size])?;
    }
    Ok(())
}

fn mkempty(dir: &Path, ndirs: u64, nfiles: u64) -> io::Result<()> {
    for j in 0..ndirs {
        let d = dir.join(format!("d{j:04}"));
        fs::create_dir_all(&d)?;
        for i in 0..nfiles {
            File::create(d.join(format!("f{i:04}")))?;
        }
    }
    Ok(())
}

/// Count every entry under `root` (not `root` itself), lstat-ing each one.
fn walk(root: &Path) -> io::Result<u64> {
    let mut n = 0;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir)? {
            let e = e?;
            let md = e.metadata()?; // fstatat(dirfd, name, AT_SYMLINK_NOFOLLOW)
            n += 1;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(n)
}

fn read_list(prefix: &str, list: &str) -> io::Result<Vec<PathBuf>> {
    let base = Path::new(prefix);
    BufReader::new(File::open(list)?)
        .lines()
        .filter(|l| !matches!(l, Ok(s) if s.is_empty()))
        .map(|l| l.map(|s| base.join(s)))
        .collect()
}

#[repr(C)]
struct Timespec {
    tv_sec: i64,
    tv_nsec: i64,
}

unsafe extern "C" {
    fn utimensat(
        dirfd: i32,
        path: *const std::ffi::c_char,
        times: *const Timespec,
        flags: i32,
    ) -> i32;
}

const AT_FDCWD: i32 = -100;

fn touch_now(path: &CString) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string; a null `times` means "now" for both.
    let r = unsafe { utimensat(AT_FDCWD, path.as_ptr(), std::ptr::null(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn is_mounted(mnt: &[u8]) -> io::Result<bool> {
    let info = fs::read("/proc/self/mountinfo")?;
    Ok(info
        .split(|&b| b == b'\n')
        .any(|line| line.split(|&b| b == b' ').nth(4) == Some(mnt)))
}

fn alive(pid: u64) -> bool {
    // A zombie still has /proc/PID: look at the state letter after the command name.
    match fs::read(format!("/proc/{pid}/stat")) {
        Ok(s) => match s.iter().rposition(|&b| b == b')') {
            Some(i) => s.get(i + 2).is_some_and(|&c| c != b'Z' && c != b'X'),
            None => false,
        },
        Err(_) => false,
    }
}

fn waitmount(mnt: &str, pid: u64, secs: u64) -> io::Result<()> {
    let canon = fs::canonicalize(mnt)?;
    let want = canon.as_os_str().as_bytes();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if is_mounted(want)? {
            return Ok(());
        }
        if pid != 0 && !alive(pid) {
            return Err(io::Error::other(format!(
                "daemon {pid} exited before mounting"
            )));
        }
        if Instant::now() > deadline {
            return Err(io::Error::other(format!(
                "{mnt} not mounted after {secs} s"
            )));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}
