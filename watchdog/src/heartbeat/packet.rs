//! Heartbeat datagram format, version 1. All integers big-endian (network order).
//! The specification, with test vectors, is docs/heartbeat.md.
//!
//! ```text
//! offset size field
//!      0    4 magic "WDHB"
//!      4    1 version (1)
//!      5    1 status: 1 = alive, 2 = stalled (the last gasp before silence)
//!      6    2 flags: 0x0001 a reason follows the node id, 0x0002 an HMAC-SHA256 tag
//!             ends the datagram; other bits must be 0
//!      8    8 incarnation: the sender's start time, unix ns; a restarted daemon has a
//!             larger one, so a peer can tell a restart from a replay
//!     16    8 sequence: 1 for the first datagram of an incarnation, +1 for each next
//!     24    8 sent_at: sender wall clock, unix ms (informational)
//!     32    1 N = length of the node id, 1..=64
//!     33    N node id, UTF-8
//!  (flag 0x0001)  1 R = length of the reason, then R bytes of UTF-8
//!  (flag 0x0002) 32 HMAC-SHA256 over every byte before it, with the shared key
//! ```
use bytes::{Buf, BufMut, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Flag: a reason follows the node id.
pub const FLAG_REASON: u16 = 0x0001;
/// Flag: an HMAC-SHA256 tag ends the datagram.
pub const FLAG_AUTH: u16 = 0x0002;
/// Length of the tag.
pub const TAG_LEN: usize = 32;
/// Longest reason on the wire, in bytes.
pub const REASON_MAX: usize = 255;

pub const MAGIC: [u8; 4] = *b"WDHB";
pub const VERSION: u8 = 1;
/// Bytes before the node id.
pub const HEADER_LEN: usize = 33;
pub const NODE_ID_MAX: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Alive,
    /// Sent a few times after a verdict, before silence, with the reason: peers that
    /// speak the protocol fail over at once.
    Stalled,
}

impl Status {
    fn to_wire(self) -> u8 {
        match self {
            Status::Alive => 1,
            Status::Stalled => 2,
        }
    }

    fn from_wire(v: u8) -> Option<Self> {
        match v {
            1 => Some(Status::Alive),
            2 => Some(Status::Stalled),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Alive => "alive",
            Status::Stalled => "stalled",
        }
    }
}

/// What a datagram's tag says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Auth {
    /// It has no tag.
    Unsigned,
    /// It has a tag, and no key was given to check it.
    Unchecked,
    /// Its tag is right for the key.
    Verified,
    /// Its tag is wrong for the key: forged, or another key.
    Forged,
}

impl Auth {
    pub fn as_str(self) -> &'static str {
        match self {
            Auth::Unsigned => "unsigned",
            Auth::Unchecked => "unchecked",
            Auth::Verified => "verified",
            Auth::Forged => "forged",
        }
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length.
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC accepts any key length")
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub node_id: String,
    pub incarnation: u64,
    pub seq: u64,
    pub sent_at_ms: u64,
    pub status: Status,
    /// Why (the last gasp says what stalled); at most REASON_MAX bytes on the wire.
    pub reason: Option<String>,
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
    #[error("unknown heartbeat flags {0:#06x}")]
    UnknownFlags(u16),
    #[error("reason is not UTF-8")]
    ReasonNotUtf8,
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
    /// Encode into `out`, signed with `key` if given. The node id must have passed
    /// [`validate_node_id`]; a reason longer than REASON_MAX bytes is cut (at a
    /// character boundary).
    pub fn encode(&self, key: Option<&[u8]>, out: &mut BytesMut) {
        debug_assert!(validate_node_id(&self.node_id).is_ok());
        let start = out.len();
        let reason = self.reason.as_deref().map(|r| {
            let mut end = r.len().min(REASON_MAX);
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            &r[..end]
        });
        let flags = if reason.is_some() { FLAG_REASON } else { 0 }
            | if key.is_some() { FLAG_AUTH } else { 0 };
        out.reserve(HEADER_LEN + self.node_id.len() + 1 + REASON_MAX + TAG_LEN);
        out.put_slice(&MAGIC);
        out.put_u8(VERSION);
        out.put_u8(self.status.to_wire());
        out.put_u16(flags);
        out.put_u64(self.incarnation);
        out.put_u64(self.seq);
        out.put_u64(self.sent_at_ms);
        out.put_u8(self.node_id.len() as u8);
        out.put_slice(self.node_id.as_bytes());
        if let Some(r) = reason {
            out.put_u8(r.len() as u8);
            out.put_slice(r.as_bytes());
        }
        if let Some(k) = key {
            let mut m = mac(k);
            m.update(&out[start..]);
            out.put_slice(&m.finalize().into_bytes());
        }
    }

    /// Decode one datagram, ignoring any tag.
    pub fn decode(buf: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_with(buf, None).map(|(hb, _)| hb)
    }

    /// Decode one datagram and check its tag against `key`, if given.
    pub fn decode_with(buf: &[u8], key: Option<&[u8]>) -> Result<(Self, Auth), DecodeError> {
        if buf.len() < HEADER_LEN {
            return Err(DecodeError::TooShort(buf.len()));
        }
        let flags = u16::from_be_bytes([buf[6], buf[7]]);
        if flags & !(FLAG_REASON | FLAG_AUTH) != 0 {
            return Err(DecodeError::UnknownFlags(flags));
        }
        let (body, tag) = if flags & FLAG_AUTH != 0 {
            if buf.len() < HEADER_LEN + TAG_LEN {
                return Err(DecodeError::TooShort(buf.len()));
            }
            let (b, t) = buf.split_at(buf.len() - TAG_LEN);
            (b, Some(t))
        } else {
            (buf, None)
        };
        let hb = Self::decode_body(body, buf.len(), flags)?;
        let auth = match (tag, key) {
            (None, _) => Auth::Unsigned,
            (Some(_), None) => Auth::Unchecked,
            (Some(t), Some(k)) => {
                let mut m = mac(k);
                m.update(body);
                // Constant-time comparison.
                if m.verify_slice(t).is_ok() {
                    Auth::Verified
                } else {
                    Auth::Forged
                }
            }
        };
        Ok((hb, auth))
    }

    fn decode_body(mut buf: &[u8], total: usize, flags: u16) -> Result<Self, DecodeError> {
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
        let _ = buf.get_u16();
        let incarnation = buf.get_u64();
        let seq = buf.get_u64();
        let sent_at_ms = buf.get_u64();
        let id_len = buf.get_u8() as usize;
        if id_len == 0 || id_len > NODE_ID_MAX {
            return Err(DecodeError::BadNodeIdLength(id_len));
        }
        let tag_len = if flags & FLAG_AUTH != 0 { TAG_LEN } else { 0 };
        let mismatch = |expected: usize| DecodeError::LengthMismatch {
            expected: expected + tag_len,
            actual: total,
        };
        if buf.len() < id_len {
            return Err(mismatch(HEADER_LEN + id_len));
        }
        let (id, mut rest) = buf.split_at(id_len);
        let node_id = std::str::from_utf8(id)
            .map_err(|_| DecodeError::NodeIdNotUtf8)?
            .to_owned();
        let mut reason = None;
        let mut expected = HEADER_LEN + id_len;
        if flags & FLAG_REASON != 0 {
            let Some(&r_len) = rest.first() else {
                return Err(mismatch(expected + 1));
            };
            expected += 1 + r_len as usize;
            let text = rest.get(1..1 + r_len as usize).ok_or(mismatch(expected))?;
            reason = Some(
                std::str::from_utf8(text)
                    .map_err(|_| DecodeError::ReasonNotUtf8)?
                    .to_owned(),
            );
            rest = &rest[1 + r_len as usize..];
        }
        if !rest.is_empty() {
            return Err(mismatch(expected));
        }
        Ok(Heartbeat {
            node_id,
            incarnation,
            seq,
            sent_at_ms,
            status,
            reason,
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
            reason: None,
        }
    }

    fn encoded(hb: &Heartbeat) -> Vec<u8> {
        signed(hb, None)
    }

    fn signed(hb: &Heartbeat, key: Option<&[u8]>) -> Vec<u8> {
        let mut b = BytesMut::new();
        hb.encode(key, &mut b);
        b.to_vec()
    }

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn a_signed_datagram_verifies_with_its_key_only() {
        let bytes = signed(&sample(), Some(KEY));
        assert_eq!(bytes.len(), 37 + TAG_LEN);
        assert_eq!(
            Heartbeat::decode_with(&bytes, Some(KEY)),
            Ok((sample(), Auth::Verified))
        );
        assert_eq!(
            Heartbeat::decode_with(&bytes, Some(b"another key of some length......")),
            Ok((sample(), Auth::Forged))
        );
        assert_eq!(
            Heartbeat::decode_with(&bytes, None),
            Ok((sample(), Auth::Unchecked))
        );
        // A flipped bit anywhere breaks the tag.
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert_eq!(
            Heartbeat::decode_with(&bad, Some(KEY)).unwrap().1,
            Auth::Forged
        );
        assert_eq!(
            Heartbeat::decode_with(&encoded(&sample()), Some(KEY)),
            Ok((sample(), Auth::Unsigned))
        );
    }

    #[test]
    fn a_stalled_datagram_carries_its_reason() {
        let mut hb = sample();
        hb.status = Status::Stalled;
        hb.reason = Some("thread 7 (main) of pid 6: vfork in flight for 301 ms".into());
        let bytes = signed(&hb, Some(KEY));
        assert_eq!(
            Heartbeat::decode_with(&bytes, Some(KEY)),
            Ok((hb.clone(), Auth::Verified))
        );
        // Too long a reason is cut at a character boundary.
        hb.reason = Some("é".repeat(200));
        let back = Heartbeat::decode(&encoded(&hb)).unwrap();
        assert_eq!(back.reason.unwrap().len(), 254);
    }

    /// docs/heartbeat.md's test vectors: each `key`/`datagram` pair decodes to what its
    /// fields say, and encoding the fields gives the datagram back.
    #[test]
    fn the_documented_test_vectors_hold() {
        let doc = include_str!("../../../docs/heartbeat.md");
        let field = |block: &str, name: &str| -> Option<String> {
            block.lines().find_map(|l| {
                l.trim()
                    .strip_prefix(&format!("{name}:"))
                    .map(|v| v.trim().to_owned())
            })
        };
        let hex = |s: &str| -> Vec<u8> {
            let s: String = s.split_whitespace().collect();
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect()
        };
        let mut checked = 0;
        for block in doc.split("```vector").skip(1) {
            let block = block.split("```").next().unwrap();
            let datagram = hex(&field(block, "datagram").unwrap());
            let key = field(block, "key")
                .filter(|k| k != "none")
                .map(|k| k.into_bytes());
            let hb = Heartbeat {
                node_id: field(block, "node_id").unwrap(),
                incarnation: field(block, "incarnation").unwrap().parse().unwrap(),
                seq: field(block, "seq").unwrap().parse().unwrap(),
                sent_at_ms: field(block, "sent_at_ms").unwrap().parse().unwrap(),
                status: match field(block, "status").unwrap().as_str() {
                    "alive" => Status::Alive,
                    _ => Status::Stalled,
                },
                reason: field(block, "reason").filter(|r| r != "none"),
            };
            assert_eq!(signed(&hb, key.as_deref()), datagram, "{block}");
            let auth = if key.is_some() {
                Auth::Verified
            } else {
                Auth::Unsigned
            };
            assert_eq!(
                Heartbeat::decode_with(&datagram, key.as_deref()),
                Ok((hb, auth))
            );
            checked += 1;
        }
        assert_eq!(checked, 3, "docs/heartbeat.md has three vectors");
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
