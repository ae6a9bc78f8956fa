//! TOML files with errors that say where: file, line and column. A leaf module, shared
//! by the config file and the kernel-report rules files, so neither depends on the other.
use serde::Deserialize;

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
