//! The heartbeat's shared key: a file only its owner may read.
use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

/// Shortest key accepted, in bytes.
pub const KEY_MIN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(
        "{path} is readable by others (mode {mode:04o}): a shared key must be private (chmod 600 it)"
    )]
    Exposed { path: PathBuf, mode: u32 },
    #[error("{path} holds {len} bytes: a key needs at least {KEY_MIN}")]
    TooShort { path: PathBuf, len: usize },
}

/// The key in file `path`: its bytes, without one trailing newline. Refused when the
/// group or others may read or write the file, or when it is shorter than KEY_MIN.
pub fn load(path: &Path) -> Result<Vec<u8>, KeyError> {
    let io = |e| KeyError::Io(path.to_owned(), e);
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    // A key is bytes, and a few KiB at most; a FIFO or a device is no key file.
    let mut key = crate::input_file::read_regular(path, 64 * 1024).map_err(io)?;
    if key.last() == Some(&b'\n') {
        key.pop();
    }
    if key.len() < KEY_MIN {
        return Err(KeyError::TooShort {
            path: path.to_owned(),
            len: key.len(),
        });
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, body: &[u8], mode: u32) -> PathBuf {
        let p = std::env::temp_dir().join(format!("wd-key-{name}-{}", std::process::id()));
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn a_private_key_file_loads_without_its_newline() {
        let p = file("ok", b"0123456789abcdef\n", 0o600);
        assert_eq!(load(&p).unwrap(), b"0123456789abcdef");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn an_exposed_or_short_key_is_refused_with_the_reason() {
        let p = file("exposed", b"0123456789abcdef", 0o644);
        assert_eq!(
            load(&p).unwrap_err().to_string(),
            format!(
                "{} is readable by others (mode 0644): a shared key must be private (chmod 600 it)",
                p.display()
            )
        );
        std::fs::remove_file(p).unwrap();
        let p = file("short", b"short\n", 0o600);
        assert_eq!(
            load(&p).unwrap_err().to_string(),
            format!("{} holds 5 bytes: a key needs at least 16", p.display())
        );
        std::fs::remove_file(p).unwrap();
    }
}
