//! Files the operator gives (config, rules, key): read safely, and, for TOML, with
//! errors that say where (file, line and column). A leaf module, shared by the config
//! file and the kernel-report rules files, so neither depends on the other.
use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use serde::Deserialize;

/// Read the regular file at `path`, of at most `max` bytes. Anything else (a FIFO, a
/// device, a directory) is refused before a byte is read, and opening never waits (a
/// FIFO with no writer would hold up whoever reads it, a reload included).
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > max {
        return Err(too_big(max));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(too_big(max));
    }
    Ok(bytes)
}

fn too_big(max: u64) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        format!("larger than {max} bytes, the most this file may hold"),
    )
}

/// As [`read_regular`], as UTF-8 text.
pub fn read_regular_text(path: &Path, max: u64) -> std::io::Result<String> {
    String::from_utf8(read_regular(path, max)?)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "not UTF-8 text"))
}

/// Line and column (1-based) of byte `offset` in `text`.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// A TOML file that does not parse, or has a key or value it must not: where, and what.
/// Shared by the config file and rules files.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct TomlError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Parse TOML text from `file` into `T`.
pub fn parse_toml<T: for<'de> Deserialize<'de>>(text: &str, file: &str) -> Result<T, TomlError> {
    toml::from_str::<T>(text).map_err(|e| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        TomlError {
            file: file.to_owned(),
            line,
            column,
            message: e.message().to_owned(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_bound_are_read() {
        let dir = std::env::temp_dir().join(format!("wd-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("a.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        assert_eq!(read_regular_text(&file, 64).unwrap(), "x = 1\n");
        let e = read_regular(&file, 3).unwrap_err();
        assert_eq!(
            e.to_string(),
            "larger than 3 bytes, the most this file may hold"
        );
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert_eq!(
            read_regular(&fifo, 64).unwrap_err().to_string(),
            "not a regular file"
        );
        assert_eq!(
            read_regular(&dir, 64).unwrap_err().to_string(),
            "not a regular file"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
