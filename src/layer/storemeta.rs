//! The store's per-directory record `.wh..wh..lfmeta`: what a layer's tar said about
//! the regular files of one directory whose inodes are shared with other layers.
//!
//! The layer store (driver/) deduplicates regular files by hard-linking them to one
//! object per content, so the inode of such a file carries the mode, owner, times and
//! link count of whichever layer made the object first. The store writes this record
//! into every directory of a layer that holds such files; a reader applies it on every
//! stat of the entry, and reports the record's file number (store-wide, shared by the
//! tar's own hard links) as the file's identity instead of the shared inode number.
//! The name starts with `.wh.`, so a union never shows it from a lower layer.
//!
//! Bytes (all integers little-endian):
//! ```text
//! magic    8 bytes  "LFMETA1\n"
//! count    u32      number of entries, sorted by name (bytewise), no duplicates
//! entries  count times:
//!   name_len u16 (1..=255), name (no '/', no NUL, not "." or "..")
//!   mode u32 (file type bits included: S_IFREG | permissions)
//!   uid u32, gid u32
//!   atime_sec i64, atime_nsec u32, mtime_sec i64, mtime_nsec u32 (nsec < 1e9)
//!   nlink u32 (>= 1: names the file has in its layer's tar)
//!   file u64  (1..FILE_NUMBER_LIMIT: store-wide file number)
//! ```
//! Nothing follows the last entry. The store writes a record whole (staged, then
//! renamed into place before the layer is visible), so a reader that meets any other
//! shape treats it as damaged ([`DecodeError`]), never guesses.

use crate::sys::Timespec;

/// The record's name in each directory.
pub const RECORD_NAME: &str = ".wh..wh..lfmeta";

/// First bytes of every record; the digit is the format version.
pub const MAGIC: &[u8; 8] = b"LFMETA1\n";

/// File numbers are below 2^48, so a reader can place them in a reserved inode space.
pub const FILE_NUMBER_LIMIT: u64 = 1 << 48;

/// Bytes of one entry besides its name.
const FIXED: usize = 4 * 4 + 8 + 4 + 8 + 4 + 8;

/// What the tar said of one regular file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredFile {
    /// The entry's name in its directory (one component).
    pub name: Vec<u8>,
    /// `st_mode`, type bits included.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub atime: Timespec,
    pub mtime: Timespec,
    /// How many names the file has in its layer's tar (its own hard links).
    pub nlink: u32,
    /// Store-wide file number, shared by the tar's hard links of one file.
    pub file: u64,
}

/// Why a record cannot be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Not this format (or another version of it).
    BadMagic,
    /// The bytes end inside an entry, or go on after the last one.
    BadLength,
    /// An entry breaks a rule of the format (named in the message).
    BadEntry(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::BadMagic => write!(f, "not a layerfuse store record"),
            DecodeError::BadLength => write!(f, "store record has a bad length"),
            DecodeError::BadEntry(why) => write!(f, "store record entry is invalid: {why}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// The record's bytes for `entries` (sorted here; the caller gives unique valid names).
pub fn encode(entries: &[StoredFile]) -> Vec<u8> {
    let mut sorted: Vec<&StoredFile> = entries.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let size: usize = sorted.iter().map(|e| 2 + e.name.len() + FIXED).sum();
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + size);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(sorted.len() as u32).to_le_bytes());
    for e in sorted {
        out.extend_from_slice(&(e.name.len() as u16).to_le_bytes());
        out.extend_from_slice(&e.name);
        for v in [e.mode, e.uid, e.gid] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for t in [e.atime, e.mtime] {
            out.extend_from_slice(&t.sec.to_le_bytes());
            out.extend_from_slice(&(t.nsec as u32).to_le_bytes());
        }
        out.extend_from_slice(&e.nlink.to_le_bytes());
        out.extend_from_slice(&e.file.to_le_bytes());
    }
    out
}

/// Whether `name` may appear in a record.
pub fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != b"."
        && name != b".."
        && !name.iter().any(|&b| b == b'/' || b == 0)
}

/// Read a record; entries come back sorted by name (see [`find`]).
pub fn decode(bytes: &[u8]) -> Result<Vec<StoredFile>, DecodeError> {
    let rest = bytes.strip_prefix(MAGIC).ok_or(DecodeError::BadMagic)?;
    let mut r = Reader(rest);
    let count = r.u32()? as usize;
    // Each entry takes at least FIXED + 3 bytes: a count beyond that is a lie.
    if count > r.0.len() / (FIXED + 3) {
        return Err(DecodeError::BadLength);
    }
    let mut out: Vec<StoredFile> = Vec::with_capacity(count);
    for _ in 0..count {
        let len = usize::from(r.u16()?);
        let name = r.take(len)?.to_vec();
        if !valid_name(&name) {
            return Err(DecodeError::BadEntry("name"));
        }
        if out.last().is_some_and(|p| p.name >= name) {
            return Err(DecodeError::BadEntry("names not sorted or repeated"));
        }
        let mode = r.u32()?;
        let uid = r.u32()?;
        let gid = r.u32()?;
        let atime = r.time()?;
        let mtime = r.time()?;
        let nlink = r.u32()?;
        let file = r.u64()?;
        if mode & 0o170000 != 0o100000 {
            return Err(DecodeError::BadEntry("mode is not a regular file's"));
        }
        if nlink == 0 {
            return Err(DecodeError::BadEntry("link count 0"));
        }
        if file == 0 || file >= FILE_NUMBER_LIMIT {
            return Err(DecodeError::BadEntry("file number out of range"));
        }
        out.push(StoredFile {
            name,
            mode,
            uid,
            gid,
            atime,
            mtime,
            nlink,
            file,
        });
    }
    if !r.0.is_empty() {
        return Err(DecodeError::BadLength);
    }
    Ok(out)
}

/// The entry for `name` in decoded (sorted) entries.
pub fn find<'a>(entries: &'a [StoredFile], name: &[u8]) -> Option<&'a StoredFile> {
    entries
        .binary_search_by(|e| e.name.as_slice().cmp(name))
        .ok()
        .and_then(|i| entries.get(i))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.0.len() < n {
            return Err(DecodeError::BadLength);
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::BadLength)
    }
    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn time(&mut self) -> Result<Timespec, DecodeError> {
        let sec = i64::from_le_bytes(self.array()?);
        let nsec = self.u32()?;
        if nsec >= 1_000_000_000 {
            return Err(DecodeError::BadEntry("nanoseconds out of range"));
        }
        Ok(Timespec {
            sec,
            nsec: i64::from(nsec),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, file: u64) -> StoredFile {
        StoredFile {
            name: name.as_bytes().to_vec(),
            mode: 0o104755,
            uid: 1000,
            gid: u32::MAX,
            atime: Timespec {
                sec: -5,
                nsec: 999_999_999,
            },
            mtime: Timespec {
                sec: i64::MAX,
                nsec: 0,
            },
            nlink: 2,
            file,
        }
    }

    #[test]
    fn round_trip_sorts_and_finds() {
        let long = "x".repeat(255);
        let given = vec![entry("zeta", 7), entry(&long, 9), entry("a b\u{e9}", 7)];
        let bytes = encode(&given);
        let back = decode(&bytes).unwrap();
        let mut want = given.clone();
        want.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(back, want);
        assert_eq!(find(&back, b"zeta").unwrap().file, 7);
        assert_eq!(find(&back, long.as_bytes()).unwrap().file, 9);
        assert!(find(&back, b"zet").is_none());
    }

    #[test]
    fn empty_record_round_trips() {
        let bytes = encode(&[]);
        assert_eq!(bytes.len(), 12);
        assert_eq!(decode(&bytes).unwrap(), vec![]);
    }

    #[test]
    fn exact_bytes_of_one_entry() {
        let e = StoredFile {
            name: b"f".to_vec(),
            mode: 0o100644,
            uid: 1,
            gid: 2,
            atime: Timespec { sec: 3, nsec: 4 },
            mtime: Timespec { sec: 5, nsec: 6 },
            nlink: 1,
            file: 0x0102,
        };
        let mut want = b"LFMETA1\n\x01\0\0\0\x01\0f".to_vec();
        want.extend_from_slice(&0o100644u32.to_le_bytes());
        want.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        want.extend_from_slice(&[3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0]);
        want.extend_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 6, 0, 0, 0]);
        want.extend_from_slice(&[1, 0, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(encode(&[e]), want);
    }

    #[test]
    fn damaged_records_are_refused() {
        let good = encode(&[entry("a", 1), entry("b", 2)]);
        assert_eq!(decode(b"LFMETA2\n"), Err(DecodeError::BadMagic));
        // Every truncation and every extra byte is caught, never a panic.
        for n in 0..good.len() {
            assert!(decode(&good[..n]).is_err(), "truncated at {n}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(DecodeError::BadLength));
        // A huge count does not allocate.
        let mut lie = MAGIC.to_vec();
        lie.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&lie), Err(DecodeError::BadLength));
        // Repeated names, bad names, bad fields.
        let dup = encode(&[entry("a", 1), entry("a", 2)]);
        assert!(matches!(decode(&dup), Err(DecodeError::BadEntry(_))));
        for bad in ["..", "a/b", "."] {
            let b = encode(&[entry(bad, 1)]);
            assert!(matches!(decode(&b), Err(DecodeError::BadEntry(_))), "{bad}");
        }
        let mut dir = entry("d", 1);
        dir.mode = 0o040755;
        assert!(decode(&encode(&[dir])).is_err());
        assert!(decode(&encode(&[entry("z", 0)])).is_err());
        assert!(decode(&encode(&[entry("z", FILE_NUMBER_LIMIT)])).is_err());
        let mut nl = entry("n", 1);
        nl.nlink = 0;
        assert!(decode(&encode(&[nl])).is_err());
        // Flipping any single byte never panics.
        for i in 0..good.len() {
            let mut b = good.clone();
            b[i] ^= 0xff;
            let _ = decode(&b);
        }
    }
}
