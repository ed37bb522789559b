//! Snapshot metadata: what containerd knows a snapshot by (key, kind, parent, labels, times,
//! usage of committed snapshots), in one redb database, `ROOT/containerd/metadata.redb`.
//!
//! Every change is one write transaction, committed durably (redb fsyncs on commit), so a crash
//! leaves the metadata as it was before or after a call, never in between. redb also locks the
//! file: a second snapshotter on the same root fails to open it instead of corrupting it.
//!
//! Tables: `snapshots` (key → JSON record), `children` ("PARENT\0CHILD" → (), so removing a
//! parent with children is refused without a scan) and `counters` ("next-id": the last snapshot
//! id handed out; ids name the snapshot directories and are never reused).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::error::SnapError;

const SNAPSHOTS: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshots");
const CHILDREN: TableDefinition<&str, ()> = TableDefinition::new("children");
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
const NEXT_ID: &str = "next-id";

/// What a snapshot is to containerd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A read-only view of a committed snapshot (`View`).
    View,
    /// A writable snapshot (`Prepare`), the only kind that can be committed.
    Active,
    /// An immutable layer (`Commit`), the only kind that can be a parent.
    Committed,
}

/// Disk use of a snapshot's own layer: bytes allocated and inodes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub size: i64,
    pub inodes: i64,
}

/// One snapshot as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Names the snapshot's directory `snapshots/ID`.
    pub id: u64,
    pub kind: Kind,
    /// Key of the parent (a committed snapshot), empty for none.
    pub parent: String,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// Measured once at commit (a committed layer never changes); None for the other kinds.
    pub usage: Option<Usage>,
}

pub struct Meta {
    db: Database,
}

fn internal(e: impl std::fmt::Display) -> SnapError {
    SnapError::Internal(format!("snapshot metadata: {e}"))
}

fn child_key(parent: &str, child: &str) -> String {
    format!("{parent}\0{child}")
}

fn decode(key: &str, bytes: &[u8]) -> Result<Record, SnapError> {
    serde_json::from_slice(bytes)
        .map_err(|e| SnapError::Internal(format!("snapshot metadata: record of {key:?}: {e}")))
}

impl Meta {
    /// Opens (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Meta, SnapError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => SnapError::Internal(format!(
                "{} is in use by another snapshotter on this root",
                path.display()
            )),
            e => SnapError::Internal(format!("cannot open {}: {e}", path.display())),
        })?;
        let txn = db.begin_write().map_err(internal)?;
        txn.open_table(SNAPSHOTS).map_err(internal)?;
        txn.open_table(CHILDREN).map_err(internal)?;
        txn.open_table(COUNTERS).map_err(internal)?;
        txn.commit().map_err(internal)?;
        Ok(Meta { db })
    }

    pub fn get(&self, key: &str) -> Result<Option<Record>, SnapError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(SNAPSHOTS).map_err(internal)?;
        let value = table.get(key).map_err(internal)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    /// Every snapshot, by key.
    pub fn all(&self) -> Result<Vec<(String, Record)>, SnapError> {
        let txn = self.db.begin_read().map_err(internal)?;
        let table = txn.open_table(SNAPSHOTS).map_err(internal)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            let key = k.value().to_string();
            let rec = decode(&key, v.value())?;
            out.push((key, rec));
        }
        Ok(out)
    }

    /// Runs `f` in one write transaction, committed only when `f` succeeds. Write transactions
    /// are serialised by redb, so `f` sees and changes the metadata alone.
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Tx) -> Result<T, SnapError>,
    ) -> Result<T, SnapError> {
        let txn = self.db.begin_write().map_err(internal)?;
        let mut tx = Tx { txn };
        let out = f(&mut tx)?;
        tx.txn.commit().map_err(internal)?;
        Ok(out)
    }
}

/// The metadata inside a write transaction.
pub struct Tx {
    txn: WriteTransaction,
}

impl Tx {
    pub fn get(&self, key: &str) -> Result<Option<Record>, SnapError> {
        let table = self.txn.open_table(SNAPSHOTS).map_err(internal)?;
        let value = table.get(key).map_err(internal)?;
        value.map(|v| decode(key, v.value())).transpose()
    }

    /// Stores `rec` under `key` and links it to its parent.
    pub fn put(&mut self, key: &str, rec: &Record) -> Result<(), SnapError> {
        let bytes = serde_json::to_vec(rec).map_err(internal)?;
        self.txn
            .open_table(SNAPSHOTS)
            .map_err(internal)?
            .insert(key, bytes.as_slice())
            .map_err(internal)?;
        if !rec.parent.is_empty() {
            let link = child_key(&rec.parent, key);
            let mut children = self.txn.open_table(CHILDREN).map_err(internal)?;
            children.insert(link.as_str(), ()).map_err(internal)?;
        }
        Ok(())
    }

    /// Deletes `key` and its link to its parent.
    pub fn delete(&mut self, key: &str, rec: &Record) -> Result<(), SnapError> {
        self.txn
            .open_table(SNAPSHOTS)
            .map_err(internal)?
            .remove(key)
            .map_err(internal)?;
        if !rec.parent.is_empty() {
            let link = child_key(&rec.parent, key);
            let mut children = self.txn.open_table(CHILDREN).map_err(internal)?;
            children.remove(link.as_str()).map_err(internal)?;
        }
        Ok(())
    }

    /// The ids of every snapshot.
    pub fn ids(&self) -> Result<Vec<u64>, SnapError> {
        let table = self.txn.open_table(SNAPSHOTS).map_err(internal)?;
        let mut ids = Vec::new();
        for entry in table.iter().map_err(internal)? {
            let (k, v) = entry.map_err(internal)?;
            ids.push(decode(k.value(), v.value())?.id);
        }
        Ok(ids)
    }

    pub fn has_children(&self, key: &str) -> Result<bool, SnapError> {
        let table = self.txn.open_table(CHILDREN).map_err(internal)?;
        let from = format!("{key}\0");
        let to = format!("{key}\u{1}");
        let mut range = table.range(from.as_str()..to.as_str()).map_err(internal)?;
        Ok(range.next().is_some())
    }

    /// A fresh snapshot id (persisted with the transaction: never handed out twice).
    pub fn next_id(&mut self) -> Result<u64, SnapError> {
        let mut table = self.txn.open_table(COUNTERS).map_err(internal)?;
        let last = table
            .get(NEXT_ID)
            .map_err(internal)?
            .map_or(0, |v| v.value());
        let id = last + 1;
        table.insert(NEXT_ID, id).map_err(internal)?;
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u64, kind: Kind, parent: &str) -> Record {
        let now = SystemTime::now();
        Record {
            id,
            kind,
            parent: parent.into(),
            labels: BTreeMap::from([("a".into(), "b".into())]),
            created: now,
            updated: now,
            usage: None,
        }
    }

    #[test]
    fn records_children_and_ids_survive_reopen() {
        let dir = std::env::temp_dir().join(format!("lf-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.redb");
        {
            let meta = Meta::open(&path).unwrap();
            meta.write(|tx| {
                assert_eq!(tx.next_id()?, 1);
                tx.put("p", &rec(1, Kind::Committed, ""))?;
                assert_eq!(tx.next_id()?, 2);
                tx.put("c", &rec(2, Kind::Active, "p"))?;
                Ok(())
            })
            .unwrap();
            // A failed transaction changes nothing.
            let err = meta.write(|tx| -> Result<(), SnapError> {
                tx.next_id()?;
                tx.put("x", &rec(9, Kind::Active, "p"))?;
                Err(SnapError::Internal("boom".into()))
            });
            assert!(err.is_err());
        }
        let meta = Meta::open(&path).unwrap();
        let c = meta.get("c").unwrap().unwrap();
        assert_eq!((c.id, c.kind, c.parent.as_str()), (2, Kind::Active, "p"));
        assert_eq!(c.labels.get("a").map(String::as_str), Some("b"));
        assert!(meta.get("x").unwrap().is_none());
        meta.write(|tx| {
            assert!(tx.has_children("p")?);
            assert!(!tx.has_children("c")?);
            let c = tx.get("c")?.unwrap();
            tx.delete("c", &c)?;
            assert!(!tx.has_children("p")?);
            assert_eq!(tx.next_id()?, 3);
            Ok(())
        })
        .unwrap();
        assert_eq!(meta.all().unwrap().len(), 1);
        drop(meta);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
