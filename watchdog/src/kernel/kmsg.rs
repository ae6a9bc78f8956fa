//! `/dev/kmsg`, read from where the daemon started: the kernel keeps every message in
//! its log, so the lines the event ring had to drop can be read back from here.
use std::{
    fs::File,
    io::{ErrorKind, Read as _, Seek as _, SeekFrom},
    os::unix::fs::OpenOptionsExt as _,
};

/// A reader of the kernel's log, positioned at its end when opened.
pub struct KmsgReader {
    file: File,
}

impl KmsgReader {
    /// Open `/dev/kmsg` without blocking reads, at the end of the log.
    pub fn open_at_end() -> std::io::Result<KmsgReader> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open("/dev/kmsg")?;
        file.seek(SeekFrom::End(0))?;
        Ok(KmsgReader { file })
    }

    /// Every message logged since the last call, with its level (0 emerg .. 7 debug),
    /// oldest first. Messages the log overwrote before they were read are skipped.
    pub fn drain(&mut self) -> Vec<LogLine> {
        let mut out = Vec::new();
        // One record per read; a record is at most 8 KiB with its dictionary.
        let mut buf = vec![0u8; 8192];
        loop {
            match self.file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend(record_text(&buf[..n])),
                // The log wrapped past our position: go on from the oldest kept.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::warn!(error = %e, "reading /dev/kmsg");
                    break;
                }
            }
        }
        out
    }
}

/// One message of the kernel's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// Console level: 0 emerg .. 7 debug.
    pub level: u8,
    pub text: String,
}

/// The message of one `/dev/kmsg` record: `PRIO,SEQ,TS,FLAGS[,...];TEXT\n` and then
/// dictionary lines starting with a space, which are not part of the message.
fn record_text(record: &[u8]) -> Option<LogLine> {
    let text = String::from_utf8_lossy(record);
    let (head, rest) = text.split_once(';')?;
    let prio: u32 = head.split(',').next()?.parse().ok()?;
    let message = rest.split('\n').next().unwrap_or("");
    Some(LogLine {
        level: (prio & 7) as u8,
        text: unescape(message),
    })
}

/// /dev/kmsg writes non-printable bytes as `\xNN`: give the message back as printed.
fn unescape(s: &str) -> String {
    if !s.contains("\\x") {
        return s.to_owned();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && bytes.get(i + 1) == Some(&b'x')
            && let Some(hex) = s.get(i + 2..i + 4)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_give_their_message_without_header_or_dictionary() {
        assert_eq!(
            record_text(b"4,1234,5678,-;BUG: unable to handle page fault\n SUBSYSTEM=x\n"),
            Some(LogLine {
                level: 4,
                text: "BUG: unable to handle page fault".into()
            })
        );
        assert_eq!(
            record_text(b"11,1,0,-,caller=T12;a \\x1b[2J b\n").map(|l| (l.level, l.text)),
            Some((3, "a \u{1b}[2J b".into()))
        );
        assert_eq!(record_text(b"no header"), None);
    }
}
