//! The named volume store: directories under `ROOT/volumes/NAME/_data` with their
//! metadata, outliving every mount that uses them.
//!
//! A mount that uses a volume holds an exclusive lock on `ROOT/volumes/NAME/users/PID`
//! for as long as it lives; a lock file nobody holds is a stale record. That is how
//! `rm` knows a volume is in use, and `prune` which volumes no mount uses.

use crate::error::{SetupError, SetupErrorKind, kind_of};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// One volume as `ls` and `inspect` show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Volume {
    pub name: String,
    /// Seconds since the epoch.
    pub created: u64,
    /// Made for one mount without a name (`--volume :/target`).
    pub anonymous: bool,
    /// The directory that holds the data.
    pub path: PathBuf,
}

/// A live mount using a volume.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct User {
    pub pid: u32,
    pub mountpoint: String,
}

#[derive(Debug)]
pub struct VolumeStore {
    root: PathBuf,
}

/// Holding this keeps a volume marked as used by this process.
#[derive(Debug)]
pub struct Claim {
    _lock: File,
    path: PathBuf,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Docker's rule for volume names: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, at most 255 bytes.
pub fn check_name(name: &str) -> Result<(), SetupError> {
    let ok = name.len() >= 2
        && name.len() <= 255
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(SetupError::invalid(format!(
            "invalid volume name {name:?}: use 2-255 characters [a-zA-Z0-9_.-], starting with a letter or digit"
        )))
    }
}

/// The default store: `/var/lib/layerfuse` for root, `$XDG_DATA_HOME/layerfuse`
/// (or `~/.local/share/layerfuse`) otherwise.
pub fn default_root() -> PathBuf {
    if crate::sys::geteuid() == 0 {
        return PathBuf::from("/var/lib/layerfuse");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("layerfuse");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home).join(".local/share/layerfuse")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random 64-hex-digit id, as Docker names anonymous volumes.
fn random_id() -> Result<String, SetupError> {
    let mut b = [0u8; 32];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| SetupError::io(Path::new("/dev/urandom"), "", &e))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

impl VolumeStore {
    pub fn new(root: Option<PathBuf>) -> VolumeStore {
        VolumeStore {
            root: root.unwrap_or_else(default_root),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join("volumes").join(name)
    }

    /// Make a volume (a random anonymous one without a name).
    pub fn create(&self, name: Option<&str>) -> Result<Volume, SetupError> {
        let (name, anonymous) = match name {
            Some(n) => {
                check_name(n)?;
                (n.to_string(), false)
            }
            None => (random_id()?, true),
        };
        let dir = self.dir(&name);
        let exists = || {
            SetupError::new(
                SetupErrorKind::AlreadyExists,
                format!("volume {name} already exists"),
            )
        };
        if dir.join("meta.json").exists() {
            return Err(exists());
        }
        // A directory without its metadata is a creation cut short (by an older version,
        // which built it in place): no mount ever used it.
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(|e| SetupError::io(&dir, "", &e))?;
        }
        let v = Volume {
            name: name.clone(),
            created: now(),
            anonymous,
            path: dir.join("_data"),
        };
        let meta = serde_json::to_vec_pretty(&v)
            .map_err(|e| SetupError::new(SetupErrorKind::Io, e.to_string()))?;
        // Built beside it and renamed into place, so a crash (kill -9) at any point leaves
        // either no volume or a whole one; a leftover `.new-` dir is never listed.
        let new = self
            .root
            .join("volumes")
            .join(format!(".new-{name}-{}", crate::sys::getpid()));
        let _ = fs::remove_dir_all(&new);
        let built = fs::create_dir_all(new.join("users"))
            .and_then(|()| fs::create_dir(new.join("_data")))
            .and_then(|()| fs::write(new.join("meta.json"), &meta))
            .map_err(|e| SetupError::io(&new, "", &e));
        let placed = built.and_then(|()| {
            fs::rename(&new, &dir).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::DirectoryNotEmpty => {
                    exists()
                }
                _ => SetupError::io(&dir, "", &e),
            })
        });
        if placed.is_err() {
            let _ = fs::remove_dir_all(&new);
        }
        placed.map(|()| v)
    }

    pub fn get(&self, name: &str) -> Result<Volume, SetupError> {
        check_name(name)?;
        let meta = self.dir(name).join("meta.json");
        let bytes = fs::read(&meta).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                SetupError::new(SetupErrorKind::NotFound, format!("no such volume: {name}"))
            }
            _ => SetupError::io(&meta, "", &e),
        })?;
        serde_json::from_slice(&bytes)
            .map_err(|e| SetupError::new(SetupErrorKind::Io, format!("{}: {e}", meta.display())))
    }

    /// The named volume, made if it does not exist yet; `true` if it was made now.
    pub fn get_or_create(&self, name: &str) -> Result<(Volume, bool), SetupError> {
        match self.get(name) {
            Ok(v) => Ok((v, false)),
            Err(e) if e.kind() == SetupErrorKind::NotFound => {
                self.create(Some(name)).map(|v| (v, true))
            }
            Err(e) => Err(e),
        }
    }

    pub fn list(&self) -> Vec<Volume> {
        let Ok(rd) = fs::read_dir(self.root.join("volumes")) else {
            return Vec::new();
        };
        let mut out: Vec<Volume> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| self.get(&e.file_name().to_string_lossy()).ok())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Live mounts using a volume (stale records are removed on the way).
    pub fn users(&self, name: &str) -> Vec<User> {
        let Ok(rd) = fs::read_dir(self.dir(name).join("users")) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in rd.filter_map(|e| e.ok()) {
            let path = e.path();
            let Ok(f) = File::open(&path) else { continue };
            if f.try_lock().is_ok() {
                // Nobody holds it: the mount is gone.
                let _ = fs::remove_file(&path);
                continue;
            }
            let pid = e.file_name().to_string_lossy().parse().unwrap_or(0);
            let mountpoint = fs::read_to_string(&path).unwrap_or_default();
            out.push(User { pid, mountpoint });
        }
        out
    }

    /// Mark a volume as used by this process until the claim is dropped.
    pub fn claim(&self, name: &str, mountpoint: &Path) -> Result<Claim, SetupError> {
        let path = self
            .dir(name)
            .join("users")
            .join(crate::sys::getpid().to_string());
        fs::write(&path, mountpoint.as_os_str().as_encoded_bytes())
            .map_err(|e| SetupError::io(&path, "", &e))?;
        let f = File::options()
            .read(true)
            .open(&path)
            .map_err(|e| SetupError::io(&path, "", &e))?;
        f.lock().map_err(|e| SetupError::io(&path, "", &e))?;
        Ok(Claim { _lock: f, path })
    }

    /// Where a volume's unfinished first population is marked.
    fn fill_marker(&self, name: &str) -> PathBuf {
        self.dir(name).join("filling")
    }

    /// Whether a first population of the volume began and never finished (the mount that
    /// filled it failed, or was killed): what its data holds is not the image's.
    pub fn fill_unfinished(&self, v: &Volume) -> bool {
        self.fill_marker(&v.name).exists()
    }

    /// Empty the data of a volume whose population did not finish.
    pub fn clear_unfinished(&self, v: &Volume) -> Result<(), SetupError> {
        let rd = fs::read_dir(&v.path).map_err(|e| SetupError::io(&v.path, "", &e))?;
        for e in rd {
            let e = e.map_err(|e| SetupError::io(&v.path, "", &e))?;
            let p = e.path();
            // Neither call follows a symlink.
            let r = match e.file_type() {
                Ok(t) if t.is_dir() => fs::remove_dir_all(&p),
                _ => fs::remove_file(&p),
            };
            r.map_err(|e| SetupError::io(&p, "cannot empty an unfinished volume", &e))?;
        }
        Ok(())
    }

    /// Mark the start of a volume's first population, before any data is copied.
    ///
    /// Neither this nor [`end_fill`](Self::end_fill) syncs: a mount must go live within
    /// its wait however busy the disk is, and a syncfs or fsync can take tens of seconds
    /// there. The marks guard against the daemon dying (kill -9, a full disk); after a
    /// power cut they are as durable as the data the filesystem wrote back.
    pub fn begin_fill(&self, v: &Volume) -> Result<(), SetupError> {
        let marker = self.fill_marker(&v.name);
        File::create(&marker)
            .map(drop)
            .map_err(|e| SetupError::io(&marker, "", &e))
    }

    /// The population is complete: drop the mark.
    pub fn end_fill(&self, v: &Volume) -> Result<(), SetupError> {
        let marker = self.fill_marker(&v.name);
        fs::remove_file(&marker).map_err(|e| SetupError::io(&marker, "", &e))
    }

    /// Remove a volume and its data; refused while a mount uses it unless `force`.
    pub fn remove(&self, name: &str, force: bool) -> Result<(), SetupError> {
        self.get(name)?;
        let users = self.users(name);
        if !users.is_empty() && !force {
            let who: Vec<String> = users
                .iter()
                .map(|u| format!("{} (pid {})", u.mountpoint, u.pid))
                .collect();
            return Err(SetupError::new(
                SetupErrorKind::Busy,
                format!(
                    "volume {name} is in use by {}; unmount first or use --force",
                    who.join(", ")
                ),
            ));
        }
        fs::remove_dir_all(self.dir(name))
            .map_err(|e| SetupError::new(kind_of(&e), format!("volume {name}: {e}")))
    }

    /// Remove every volume no live mount uses; returns their names.
    pub fn prune(&self) -> Result<Vec<String>, SetupError> {
        let mut removed = Vec::new();
        for v in self.list() {
            if self.users(&v.name).is_empty() {
                self.remove(&v.name, false)?;
                removed.push(v.name);
            }
        }
        Ok(removed)
    }

    /// Bytes used by a volume's data.
    pub fn size(&self, v: &Volume) -> u64 {
        fn walk(p: &Path) -> u64 {
            let Ok(md) = fs::symlink_metadata(p) else {
                return 0;
            };
            if md.is_dir() {
                fs::read_dir(p)
                    .map(|rd| rd.filter_map(|e| e.ok()).map(|e| walk(&e.path())).sum())
                    .unwrap_or(0)
            } else {
                md.len()
            }
        }
        walk(&v.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        assert!(check_name("data").is_ok());
        assert!(check_name("my_vol-1.2").is_ok());
        for bad in [
            "",
            "a",
            "-x",
            "a/b",
            "a:b",
            "..",
            "sp ace",
            &"x".repeat(256),
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn store_lifecycle_without_mounts() {
        let root = std::env::temp_dir().join(format!("lf-vol-unit-{}", std::process::id()));
        let s = VolumeStore::new(Some(root.clone()));
        let v = s.create(Some("one")).unwrap();
        assert!(v.path.is_dir());
        assert!(s.create(Some("one")).is_err());
        let anon = s.create(None).unwrap();
        assert_eq!(anon.name.len(), 64);
        assert!(anon.anonymous);
        let claim = s.claim("one", Path::new("/mnt/x")).unwrap();
        assert_eq!(s.users("one").len(), 1);
        assert!(s.remove("one", false).is_err());
        drop(claim);
        assert!(s.users("one").is_empty());
        let pruned = s.prune().unwrap();
        assert_eq!(pruned.len(), 2);
        assert!(s.list().is_empty());
        let _ = fs::remove_dir_all(root);
    }
}
