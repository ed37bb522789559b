//! The gRPC face: containerd's `containerd.services.snapshots.v1.Snapshots` service (through the
//! containerd-snapshots crate's `Snapshotter` trait) over `Snapshots`, each call run on tokio's
//! blocking pool (they walk directories and fsync the metadata).

use std::collections::HashMap;
use std::sync::Arc;

use containerd_snapshots as cs;
use containerd_snapshots::api::types::Mount as GrpcMount;

use super::error::SnapError;
use super::meta::Kind;
use super::mounts::Mount;
use super::snapshots::{Info, Snapshots};

pub struct Service {
    snapshots: Arc<Snapshots>,
}

impl Service {
    pub fn new(snapshots: Arc<Snapshots>) -> Service {
        Service { snapshots }
    }

    async fn run<T: Send + 'static>(
        &self,
        call: &'static str,
        f: impl FnOnce(&Snapshots) -> Result<T, SnapError> + Send + 'static,
    ) -> Result<T, SnapError> {
        let s = self.snapshots.clone();
        let out = tokio::task::spawn_blocking(move || f(&s))
            .await
            .map_err(|e| SnapError::Internal(format!("{call}: {e}")))?;
        if let Err(e) = &out {
            tracing::debug!("{call}: {e}");
        }
        out
    }
}

fn grpc_mounts(mounts: Vec<Mount>) -> Vec<GrpcMount> {
    mounts
        .into_iter()
        .map(|m| GrpcMount {
            r#type: m.kind,
            source: m.source,
            options: m.options,
            ..Default::default()
        })
        .collect()
}

fn grpc_info(i: Info) -> cs::Info {
    cs::Info {
        kind: match i.kind {
            Kind::View => cs::Kind::View,
            Kind::Active => cs::Kind::Active,
            Kind::Committed => cs::Kind::Committed,
        },
        name: i.key,
        parent: i.parent,
        labels: i.labels.into_iter().collect(),
        created_at: i.created,
        updated_at: i.updated,
    }
}

fn labels(l: HashMap<String, String>) -> std::collections::BTreeMap<String, String> {
    l.into_iter().collect()
}

type InfoStream = tokio_stream::Iter<std::vec::IntoIter<Result<cs::Info, SnapError>>>;

#[cs::tonic::async_trait]
impl cs::Snapshotter for Service {
    type Error = SnapError;

    async fn stat(&self, key: String) -> Result<cs::Info, SnapError> {
        self.run("stat", move |s| s.stat(&key)).await.map(grpc_info)
    }

    async fn update(
        &self,
        info: cs::Info,
        fieldpaths: Option<Vec<String>>,
    ) -> Result<cs::Info, SnapError> {
        let new = Info {
            key: info.name,
            kind: Kind::View, // not updatable: ignored
            parent: info.parent,
            labels: labels(info.labels),
            created: info.created_at,
            updated: info.updated_at,
        };
        let paths = fieldpaths.unwrap_or_default();
        self.run("update", move |s| s.update(new, &paths))
            .await
            .map(grpc_info)
    }

    async fn usage(&self, key: String) -> Result<cs::Usage, SnapError> {
        let u = self.run("usage", move |s| s.usage(&key)).await?;
        Ok(cs::Usage {
            inodes: u.inodes,
            size: u.size,
        })
    }

    async fn mounts(&self, key: String) -> Result<Vec<GrpcMount>, SnapError> {
        self.run("mounts", move |s| s.mounts(&key))
            .await
            .map(grpc_mounts)
    }

    async fn prepare(
        &self,
        key: String,
        parent: String,
        l: HashMap<String, String>,
    ) -> Result<Vec<GrpcMount>, SnapError> {
        self.run("prepare", move |s| {
            s.create(Kind::Active, &key, &parent, labels(l))
        })
        .await
        .map(grpc_mounts)
    }

    async fn view(
        &self,
        key: String,
        parent: String,
        l: HashMap<String, String>,
    ) -> Result<Vec<GrpcMount>, SnapError> {
        self.run("view", move |s| {
            s.create(Kind::View, &key, &parent, labels(l))
        })
        .await
        .map(grpc_mounts)
    }

    async fn commit(
        &self,
        name: String,
        key: String,
        l: HashMap<String, String>,
    ) -> Result<(), SnapError> {
        self.run("commit", move |s| s.commit(&name, &key, labels(l)))
            .await
    }

    async fn remove(&self, key: String) -> Result<(), SnapError> {
        self.run("remove", move |s| s.remove(&key)).await
    }

    async fn clear(&self) -> Result<(), SnapError> {
        self.run("cleanup", |s| s.cleanup()).await
    }

    type InfoStream = InfoStream;

    async fn list(
        &self,
        _snapshotter: String,
        filters: Vec<String>,
    ) -> Result<InfoStream, SnapError> {
        let infos = self.run("list", move |s| s.list(&filters)).await?;
        let items: Vec<_> = infos.into_iter().map(|i| Ok(grpc_info(i))).collect();
        Ok(tokio_stream::iter(items))
    }
}
