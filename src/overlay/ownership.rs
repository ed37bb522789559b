//! Ownership as the mount shows it: id mappings between the ids stored in the layers
//! and the ids callers see (fuse-overlayfs's `uidmapping=`/`gidmapping=`), and
//! squashing every owner to one id (`squash_to_root`, `squash_to_uid=`).

/// The id shown for a stored id no mapping covers (the kernel's overflow id).
pub const OVERFLOW_ID: u32 = 65534;

/// `shown..shown+len` through the mount is `stored..stored+len` in the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IdRange {
    pub shown: u32,
    pub stored: u32,
    pub len: u32,
}

/// One kind of id (users or groups): an optional mapping and an optional squash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdMap {
    /// Empty: ids are the same through the mount and on disk.
    pub ranges: Vec<IdRange>,
    /// Show every owner as this id (writes still store real ids).
    pub squash: Option<u32>,
    /// In a user namespace, files owned by ids the namespace does not map read back as
    /// the overflow id, which the kernel then refuses to let anyone delete or write
    /// (EOVERFLOW, EACCES): show them as this id instead (the namespace's own root).
    pub unmapped_as: Option<u32>,
}

impl IdMap {
    /// The id a caller sees for an id stored in a layer.
    pub fn shown(&self, stored: u32) -> u32 {
        if let Some(s) = self.squash {
            return s;
        }
        if stored == OVERFLOW_ID
            && let Some(u) = self.unmapped_as
        {
            return u;
        }
        if self.ranges.is_empty() {
            return stored;
        }
        self.ranges
            .iter()
            .find(|r| stored >= r.stored && stored - r.stored < r.len)
            .map_or(OVERFLOW_ID, |r| r.shown + (stored - r.stored))
    }

    /// The id stored for an id a caller gives; `None` if no mapping covers it.
    pub fn stored(&self, shown: u32) -> Option<u32> {
        if self.ranges.is_empty() {
            return Some(shown);
        }
        self.ranges
            .iter()
            .find(|r| shown >= r.shown && shown - r.shown < r.len)
            .map(|r| r.stored + (shown - r.shown))
    }

    /// Parse `C:H:N[:C:H:N…]` (a leading `:` is allowed, as Podman sends it).
    pub fn parse_ranges(s: &str) -> Result<Vec<IdRange>, String> {
        let nums: Result<Vec<u32>, _> = s
            .trim_start_matches(':')
            .split(':')
            .filter(|p| !p.is_empty())
            .map(str::parse::<u32>)
            .collect();
        let nums = nums.map_err(|e| format!("bad id mapping {s:?}: {e}"))?;
        if nums.is_empty() || nums.len() % 3 != 0 {
            return Err(format!(
                "bad id mapping {s:?}: expected CONTAINER:HOST:COUNT triples"
            ));
        }
        Ok(nums
            .chunks(3)
            .map(|c| IdRange {
                shown: c[0],
                stored: c[1],
                len: c[2],
            })
            .collect())
    }
}

/// Users and groups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ownership {
    pub uids: IdMap,
    pub gids: IdMap,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_style_mapping_round_trips() {
        let ranges = IdMap::parse_ranges(":0:100000:65536").unwrap();
        let m = IdMap {
            ranges,
            ..Default::default()
        };
        assert_eq!(m.shown(100000), 0);
        assert_eq!(m.shown(100005), 5);
        assert_eq!(m.shown(5), OVERFLOW_ID);
        assert_eq!(m.stored(0), Some(100000));
        assert_eq!(m.stored(70000), None);
    }

    #[test]
    fn several_ranges_and_squash() {
        let ranges = IdMap::parse_ranges("0:1000:1:1:100000:65536").unwrap();
        assert_eq!(ranges.len(), 2);
        let m = IdMap {
            ranges,
            ..Default::default()
        };
        assert_eq!(m.shown(1000), 0);
        assert_eq!(m.shown(100000), 1);
        let s = IdMap {
            squash: Some(0),
            ..Default::default()
        };
        assert_eq!(s.shown(1234), 0);
        assert_eq!(s.stored(1234), Some(1234));
        assert!(IdMap::parse_ranges("0:1").is_err());
        assert!(IdMap::parse_ranges("a:b:c").is_err());
    }
}
