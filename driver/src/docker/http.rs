//! The plugin's wire: HTTP/1.1 (hyper) on a unix socket, `POST /<Method>` with JSON
//! bodies, replies in JSON with `Err` for failures. `ApplyDiff` bodies (chunked) are
//! fed to the store as they arrive, and `Diff` replies stream the tar as the store
//! writes it: a layer is never held in memory.

use super::Plugin;
use crate::store::{LayerId, StoreError};
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use std::io::{self, Read, Write};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::UnixListener;
use tokio::sync::mpsc;

type RespBody = BoxBody<Bytes, io::Error>;

/// JSON bodies are small; anything larger than this is refused.
const MAX_JSON: usize = 1 << 20;
/// Chunks in flight between the network and the store, each side.
const CHANNEL_DEPTH: usize = 16;
const CHUNK: usize = 256 * 1024;

/// Bind the plugin's socket at `path`, root-only (mode 0600, or 0660 for `group`),
/// put in place by rename so it never exists with wider permissions.
pub fn bind(path: &Path, group_readable: bool) -> io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("sock.{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = std::os::unix::net::UnixListener::bind(&tmp)?;
    let mode = if group_readable { 0o660 } else { 0o600 };
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
    std::fs::rename(&tmp, path)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener)
}

/// Serve connections until the listener fails.
pub async fn serve(listener: UnixListener, plugin: Arc<Plugin>) -> io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        let p = plugin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(p.clone(), req));
            if let Err(e) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!("connection ended: {e}");
            }
        });
    }
}

fn reply(status: StatusCode, v: Value) -> Response<RespBody> {
    let body = Full::new(Bytes::from(v.to_string()))
        .map_err(|never| match never {})
        .boxed();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/vnd.docker.plugins.v1.2+json"),
    );
    r
}

fn ok(v: Value) -> Response<RespBody> {
    reply(StatusCode::OK, v)
}

/// Failures go back as 200 with `Err`, which is what Docker's plugin client shows.
fn err(e: impl std::fmt::Display) -> Response<RespBody> {
    reply(StatusCode::OK, json!({ "Err": e.to_string() }))
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "PascalCase")]
struct Args {
    #[serde(rename = "ID")]
    id: String,
    parent: String,
}

fn layer(s: &str) -> Result<LayerId, StoreError> {
    LayerId::parse(s)
}

fn parent(s: &str) -> Result<Option<LayerId>, StoreError> {
    if s.is_empty() {
        Ok(None)
    } else {
        LayerId::parse(s).map(Some)
    }
}

async fn json_args(req: Request<Incoming>) -> Result<Args, String> {
    let body = Limited::new(req.into_body(), MAX_JSON)
        .collect()
        .await
        .map_err(|e| format!("reading the request: {e}"))?
        .to_bytes();
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Args::default());
    }
    serde_json::from_slice(&body).map_err(|e| format!("bad request body: {e}"))
}

/// Run store work on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::io("plugin", e)))
}

async fn handle(
    plugin: Arc<Plugin>,
    req: Request<Incoming>,
) -> Result<Response<RespBody>, hyper::Error> {
    let path = req.uri().path().to_string();
    tracing::debug!(%path, "call");
    if req.method() != hyper::Method::POST {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"Err": "POST only"}),
        ));
    }
    let method = path.trim_start_matches('/');
    if method == "GraphDriver.ApplyDiff" {
        return Ok(apply_diff(plugin, req).await);
    }
    let args = match json_args(req).await {
        Ok(a) => a,
        Err(e) => return Ok(err(e)),
    };
    let p = plugin.clone();
    let r = match method {
        "Plugin.Activate" => ok(json!({"Implements": ["GraphDriver"]})),
        "GraphDriver.Init" => ok(json!({"Err": ""})),
        "GraphDriver.Capabilities" => ok(json!({"Capabilities": {"ReproducesExactDiffs": true}})),
        "GraphDriver.Create" | "GraphDriver.CreateReadWrite" => {
            let kind = if method.ends_with("ReadWrite") {
                crate::store::LayerKind::Container
            } else {
                crate::store::LayerKind::Image
            };
            done(
                blocking(move || {
                    let id = layer(&args.id)?;
                    let parent = parent(&args.parent)?;
                    p.store.create(&id, parent.as_ref(), kind).map(|_| ())
                })
                .await,
            )
        }
        "GraphDriver.Remove" => done(blocking(move || p.remove(&layer(&args.id)?)).await),
        "GraphDriver.Get" => match blocking(move || p.get(&layer(&args.id)?)).await {
            Ok(dir) => ok(json!({"Dir": dir.display().to_string(), "Err": ""})),
            Err(e) => err(e),
        },
        "GraphDriver.Put" => done(blocking(move || p.put(&layer(&args.id)?)).await),
        "GraphDriver.Exists" => {
            let exists = layer(&args.id).is_ok_and(|id| p.store.exists(&id));
            ok(json!({ "Exists": exists }))
        }
        "GraphDriver.Status" => {
            let st = blocking(move || Ok(p.status())).await.unwrap_or_default();
            ok(json!({ "Status": st }))
        }
        "GraphDriver.GetMetadata" => match blocking(move || p.metadata(&layer(&args.id)?)).await {
            Ok(m) => ok(json!({"Metadata": m, "Err": ""})),
            Err(e) => err(e),
        },
        "GraphDriver.Cleanup" => {
            let _ = blocking(move || {
                p.cleanup();
                Ok(())
            })
            .await;
            ok(json!({"Err": ""}))
        }
        "GraphDriver.Changes" => match blocking(move || {
            let id = layer(&args.id)?;
            p.store.changes(&id, parent(&args.parent)?.as_ref())
        })
        .await
        {
            Ok(ch) => {
                let list: Vec<Value> = ch
                    .iter()
                    .map(|c| json!({"Path": c.path, "Kind": c.kind as u8}))
                    .collect();
                ok(json!({"Changes": list, "Err": ""}))
            }
            Err(e) => err(e),
        },
        "GraphDriver.DiffSize" => match blocking(move || {
            let id = layer(&args.id)?;
            p.store.diff_size(&id, parent(&args.parent)?.as_ref())
        })
        .await
        {
            Ok(n) => ok(json!({"Size": n, "Err": ""})),
            Err(e) => err(e),
        },
        "GraphDriver.Diff" => diff(plugin, args),
        _ => reply(
            StatusCode::NOT_FOUND,
            json!({"Err": format!("unknown method {method}")}),
        ),
    };
    Ok(r)
}

fn done(r: Result<(), StoreError>) -> Response<RespBody> {
    match r {
        Ok(()) => ok(json!({"Err": ""})),
        Err(e) => err(e),
    }
}

/// `ApplyDiff?id=ID&parent=P`: the tar body, streamed into the store.
async fn apply_diff(plugin: Arc<Plugin>, req: Request<Incoming>) -> Response<RespBody> {
    let query = req.uri().query().unwrap_or("").to_string();
    let mut id = String::new();
    let mut par = String::new();
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        match k {
            "id" => id = percent_decode(v),
            "parent" => par = percent_decode(v),
            _ => {}
        }
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    let mut body = req.into_body();
    let pump = tokio::spawn(async move {
        while let Some(frame) = body.frame().await {
            let item = match frame {
                Ok(f) => match f.into_data() {
                    Ok(d) => Ok(d),
                    Err(_) => continue,
                },
                Err(e) => Err(io::Error::other(e)),
            };
            let stop = item.is_err();
            if tx.send(item).await.is_err() || stop {
                break;
            }
        }
    });
    let r = blocking(move || {
        let id = layer(&id)?;
        let parent = parent(&par)?;
        let reader = ChannelReader {
            rx,
            cur: Bytes::new(),
        };
        plugin.store.apply_diff(&id, parent.as_ref(), reader, None)
    })
    .await;
    pump.abort();
    match r {
        Ok(s) => ok(json!({"Size": s.size, "Err": ""})),
        Err(e) => {
            tracing::warn!("ApplyDiff: {e}");
            err(e)
        }
    }
}

/// `Diff`: the layer's tar, streamed as the store writes it.
fn diff(plugin: Arc<Plugin>, args: Args) -> Response<RespBody> {
    let (id, parent) = match (layer(&args.id), parent(&args.parent)) {
        (Ok(i), Ok(p)) => (i, p),
        (Err(e), _) | (_, Err(e)) => return err(e),
    };
    if let Err(e) = plugin.store.get(&id) {
        return err(e);
    }
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_DEPTH);
    tokio::task::spawn_blocking(move || {
        let mut w = ChannelWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        let r = plugin
            .store
            .diff(&id, parent.as_ref(), &mut w)
            .and_then(|_| w.flush().map_err(|e| StoreError::io("Diff", e)));
        if let Err(e) = r {
            tracing::warn!(layer = %id, "Diff: {e}");
            // The reply is under way: an error in the stream cuts it short, so Docker
            // sees a failed read, never a tar that merely ends early.
            let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
        }
    });
    let mut r = Response::new(ChannelBody { rx }.boxed());
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/x-tar"),
    );
    r
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The request body as a blocking reader (for the store's thread).
struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// The store's output as chunks for the reply body.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

/// A reply body fed by a channel.
struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}
