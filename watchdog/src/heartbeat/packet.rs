//! Heartbeat datagram format, version 1. All integers big-endian (network order).
//!
//! ```text
//! offset size field
//!      0    4 magic "WDHB"
//!      4    1 version (1)
//!      5    1 status: 1 = alive
//!      6    2 flags, 0 (reserved)
//!      8    8 incarnation: the sender's start time, unix ns; a restarted daemon has a
//!             larger one, so a peer can tell a restart from a replay
//!     16    8 sequence: 1 for the first datagram of an incarnation, +1 for each next
//!     24    8 sent_at: sender wall clock, unix ms (informational)
//!     32    1 N = length of the node id, 1..=64
//!     33    N node id, UTF-8
//! ```
use bytes::{Buf, BufMut, BytesMut};

pub const MAGIC: [u8; 4] = *b"WDHB";
pub const VERSION: u8 = 1;
/// Bytes before the node id.
pub const HEADER_LEN: usize = 33;
pub const NODE_ID_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Alive,
}

impl Status {
    fn to_wire(self) -> u8 {
        match self {
            Status::Alive => 1,
        }
    }

    fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(Status::Alive),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub node_id: String,
    pub incarnation: u64,
    pub seq: u64,
    pub sent_at_ms: u64,
    pub status: Status,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("datagram of {0} bytes is shorter than a heartbeat header ({HEADER_LEN} bytes)")]
    TooShort(usize),
    #[error("bad magic {0:02x?}: not a watchdog heartbeat")]
    BadMagic([u8; 4]),
    #[error("heartbeat version {0} is not supported (this build reads version {VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown heartbeat status {0}")]
    UnknownStatus(u8),
    #[error("node id length {0} is out of range 1..={NODE_ID_MAX}")]
    BadNodeIdLength(usize),
    #[error("datagram is {actual} bytes, but its header says {expected}")]
    LengthMismatch { expected: usize, actual: usize },
    #[error("node id is not UTF-8")]
    NodeIdNotUtf8,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum NodeIdError {
    #[error("node id must be 1 to {NODE_ID_MAX} bytes, got {0}")]
    Length(usize),
}

/// Check a node id before it goes on the wire.
pub fn validate_node_id(id: &str) -> Result<(), NodeIdError> {
    if id.is_empty() || id.len() > NODE_ID_MAX {
        return Err(NodeIdError::Length(id.len()));
    }
    Ok(())
}

impl Heartbeat {
    /// Encode into `out`. The node id must have passed [`validate_node_id`].
    pub fn encode(&self, out: &mut BytesMut) {
        debug_assert!(validate_node_id(&self.node_id).is_ok());
        out.reserve(HEADER_LEN + self.node_id.len());
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u8(self.status.to_wire());
        out.put_u16(0);
        out.put_u64(self.incarnation);
        out.put_u64(self.seq);
        out.put_u64(self.sent_at_ms);
        out.put_u8(self.node_id.len() as u8);
        out.put_slice(self.node_id.as_bytes());
    }

    /// Decode one datagram.
    pub fn decode(mut buf: &[u8]) -> Result<Self, DecodeError> {
        let total = buf.len();
        if total < HEADER_LEN {
            return Err(DecodeError::TooShort(total));
        }
        let mut magic = [0u8; 4];
        buf.copy_to_slice(&mut magic);
        if magic != MAGIC {
            return Err(DecodeError::BadMagic(magic));
        }
        let version = buf.get_u8();
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let status_byte = buf.get_u8();
        let status =
            Status::from_wire(status_byte).ok_or(DecodeError::UnknownStatus(status_byte))?;
        let _flags = buf.get_u16();
        let incarnation = buf.get_u64();
        let seq = buf.get_u64();
        let sent_at_ms = buf.get_u64();
        let id_len = buf.get_u8() as usize;
        if id_len == 0 || id_len > NODE_ID_MAX {
            return Err(DecodeError::BadNodeIdLength(id_len));
        }
        if buf.len() != id_len {
            return Err(DecodeError::LengthMismatch {
                expected: HEADER_LEN + id_len,
                actual: total,
            });
        }
        let node_id = std::str::from_utf8(buf)
            .map_err(|_| DecodeError::NodeIdNotUtf8)?
            .to_owned();
        Ok(Heartbeat {
            node_id,
            incarnation,
            seq,
            sent_at_ms,
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Heartbeat {
        Heartbeat {
            node_id: "db-1".into(),
            incarnation: 0x0102_0304_0506_0708,
            seq: 42,
            sent_at_ms: 1_700_000_000_000,
            status: Status::Alive,
        }
    }

    fn encoded(hb: &Heartbeat) -> Vec<u8> {
        let mut b = BytesMut::new();
        hb.encode(&mut b);
        b.to_vec()
    }

    #[test]
    fn layout_matches_the_documented_format() {
        let bytes = encoded(&sample());
        let mut expected = Vec::new();
        expected.extend_from_slice(b"WDHB");
        expected.extend_from_slice(&[1, 1, 0, 0]);
        expected.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        expected.extend_from_slice(&42u64.to_be_bytes());
        expected.extend_from_slice(&1_700_000_000_000u64.to_be_bytes());
        expected.push(4);
        expected.extend_from_slice(b"db-1");
        assert_eq!(bytes, expected);
    }

    #[test]
    fn round_trip() {
        let hb = sample();
        assert_eq!(Heartbeat::decode(&encoded(&hb)), Ok(hb));
    }

    #[test]
    fn every_malformed_datagram_is_named() {
        let good = encoded(&sample());
        assert_eq!(
            Heartbeat::decode(&good[..10]),
            Err(DecodeError::TooShort(10))
        );

        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(
            Heartbeat::decode(&bad),
            Err(DecodeError::BadMagic(*b"XDHB"))
        );

        let mut bad = good.clone();
        bad[4] = 2;
        assert_eq!(
            Heartbeat::decode(&bad),
            Err(DecodeError::UnsupportedVersion(2))
        );

        let mut bad = good.clone();
        bad[5] = 9;
        assert_eq!(Heartbeat::decode(&bad), Err(DecodeError::UnknownStatus(9)));

        let mut bad = good.clone();
        bad[32] = 0;
        assert_eq!(
            Heartbeat::decode(&bad),
            Err(DecodeError::BadNodeIdLength(0))
        );

        let mut bad = good.clone();
        bad.push(b'!');
        assert_eq!(
            Heartbeat::decode(&bad),
            Err(DecodeError::LengthMismatch {
                expected: 37,
                actual: 38
            })
        );

        let mut bad = good.clone();
        bad[33] = 0xff;
        assert_eq!(Heartbeat::decode(&bad), Err(DecodeError::NodeIdNotUtf8));
    }

    #[test]
    fn node_ids_are_bounded() {
        assert!(validate_node_id("a").is_ok());
        assert!(validate_node_id(&"n".repeat(64)).is_ok());
        assert_eq!(validate_node_id(""), Err(NodeIdError::Length(0)));
        assert_eq!(
            validate_node_id(&"n".repeat(65)),
            Err(NodeIdError::Length(65))
        );
    }
}
