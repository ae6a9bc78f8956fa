//! The daemon's side of the control socket.
use std::{
    io,
    os::unix::fs::{FileTypeExt, PermissionsExt},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
};

use super::{
    access::{self, Access, Peer},
    proto::{MAX_REQUEST, Request, Response, parse_request},
};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("another watchdog is already serving {0}")]
    InUse(PathBuf),
    #[error("{0} exists and is not a socket; refusing to replace it")]
    NotASocket(PathBuf),
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Answers one request. The daemon supplies it.
pub type Handler = Arc<dyn Fn(Request) -> Response + Send + Sync>;

/// Bind the control socket at `path`: mode 0600, or 0660 with group `group` (whose
/// members may then connect, to read). A stale socket left by a dead daemon is
/// replaced; a live one is not.
pub fn bind(path: &Path, group: Option<u32>) -> Result<UnixListener, ServerError> {
    let io_err = |source| ServerError::Io {
        path: path.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ServerError::NotASocket(path.to_owned()));
        }
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ServerError::InUse(path.to_owned()));
        }
        std::fs::remove_file(path).map_err(io_err)?;
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    // Created private from the start: no window in which others could connect.
    // SAFETY: umask only changes the process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(io_err)?;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(io_err)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(io_err)?;
    } else {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err)?;
    }
    Ok(listener)
}

/// Requests worked on at once, at most (the others wait their turn): each may read
/// /proc for every thread of the service, or wait for the store.
pub const MAX_WORKING: usize = 4;
/// Bytes of replies not yet read by their clients, at most: a `threads` listing of a
/// large service is a megabyte or more, and clients that never read must not make the
/// daemon hold hundreds of them. A reply that does not fit is refused, briefly.
pub const MAX_UNREAD_BYTES: usize = 8 << 20;
/// Longest a client may take to read its reply before it is dropped.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the connections share: turns at the handler, and the bytes of unread replies.
struct Limits {
    working: tokio::sync::Semaphore,
    unread: std::sync::atomic::AtomicUsize,
}

/// Serve requests until the task is dropped, each as `access` allows its peer. The
/// handler runs on the blocking pool (it may wait for the store or read /proc), never on
/// the runtime's workers, which the event reader and the scanner need.
pub async fn serve(listener: UnixListener, handler: Handler, access: Access) {
    let limits = Arc::new(Limits {
        working: tokio::sync::Semaphore::new(MAX_WORKING),
        unread: std::sync::atomic::AtomicUsize::new(0),
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = handler.clone();
                let limits = limits.clone();
                tokio::spawn(async move {
                    if let Err(e) = answer(stream, handler, access, &limits).await {
                        tracing::debug!(error = %e, "control connection ended with an error");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(
    stream: UnixStream,
    handler: Handler,
    access: Access,
    limits: &Limits,
) -> io::Result<()> {
    use std::sync::atomic::Ordering;
    let cred = stream.peer_cred()?;
    let peer = Peer {
        uid: cred.uid(),
        gid: cred.gid(),
        pid: cred.pid(),
    };
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut line = Vec::new();
    // A client that never finishes its line must not hold a task for ever.
    let read =
        tokio::time::timeout(Duration::from_secs(5), reader.read_until(b'\n', &mut line)).await;
    let response = match read {
        Err(_) => Response::Error("request timed out".into()),
        Ok(Err(e)) => return Err(e),
        Ok(Ok(_)) => match parse_request(line.trim_ascii_end()) {
            Ok(req) => match access::authorize(access, peer, &req, access::proc_in_group) {
                Ok(()) => {
                    let _turn = limits.working.acquire().await.map_err(io::Error::other)?;
                    tokio::task::spawn_blocking(move || handler(req))
                        .await
                        .unwrap_or_else(|e| Response::Error(format!("the request failed: {e}")))
                }
                Err(why) => {
                    tracing::warn!(uid = peer.uid, pid = ?peer.pid, request = req.name(), "control request denied");
                    Response::Error(why)
                }
            },
            Err(e) => Response::Error(e),
        },
    };
    let mut out = serde_json::to_vec(&response).map_err(io::Error::other)?;
    out.push(b'\n');
    let held = limits.unread.fetch_add(out.len(), Ordering::AcqRel) + out.len();
    if held > MAX_UNREAD_BYTES && out.len() > 4096 {
        limits.unread.fetch_sub(out.len(), Ordering::AcqRel);
        let busy = Response::Error(format!(
            "other clients have not read {} MiB of replies yet: try again",
            (held - out.len()) >> 20
        ));
        out = serde_json::to_vec(&busy).map_err(io::Error::other)?;
        out.push(b'\n');
        limits.unread.fetch_add(out.len(), Ordering::AcqRel);
    }
    // A client that does not read its reply is dropped, and its reply with it.
    let written = tokio::time::timeout(REPLY_TIMEOUT, write.write_all(&out)).await;
    limits.unread.fetch_sub(out.len(), Ordering::AcqRel);
    match written {
        Ok(written) => written?,
        Err(_) => return Err(io::Error::new(io::ErrorKind::TimedOut, "reply not read")),
    }
    write.shutdown().await
}
