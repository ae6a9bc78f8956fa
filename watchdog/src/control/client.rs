//! wdctl's side of the control socket.
use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::proto::{Reply, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot connect to the watchdog daemon at {path}: {source} (is it running? see --socket)"
    )]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("talking to the daemon at {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the daemon at {path} sent a reply this wdctl cannot read: {detail}")]
    BadReply { path: String, detail: String },
    #[error("the daemon refused the request: {0}")]
    Refused(String),
}

/// Send one request and wait for its reply.
pub fn call(socket: &Path, req: &Request) -> Result<Reply, ClientError> {
    let path = socket.display().to_string();
    let io = |source| ClientError::Io {
        path: path.clone(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        path: path.clone(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let mut line = serde_json::to_vec(req).expect("requests always serialize");
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;
    let mut reply = String::new();
    BufReader::new(stream).read_line(&mut reply).map_err(io)?;
    match serde_json::from_str::<Response>(&reply) {
        Ok(Response::Ok(r)) => Ok(r),
        Ok(Response::Error(e)) => Err(ClientError::Refused(e)),
        Err(e) => Err(ClientError::BadReply {
            path,
            detail: e.to_string(),
        }),
    }
}
