//! Text from outside (kernel lines, heartbeat node ids and reasons, program names) made
//! safe to show on a terminal: control characters are written as escapes, so a field
//! can neither forge a line of its own (a newline) nor drive the terminal (ESC, CSI).
use std::borrow::Cow;

use serde::{Serialize, de::DeserializeOwned};

/// `s` with every control character (C0, DEL, C1) escaped as Rust writes it (`\n`,
/// `\u{1b}`), and backslashes doubled so an escape cannot be faked; `s` itself when it
/// has none.
pub fn printable(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c.is_control() || c == '\\') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() || c == '\\' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// `value` with every string in it made [`printable`]: for showing a whole reply of
/// the daemon (kernel text, program names, reasons) as text.
pub fn printable_all<T: Serialize + DeserializeOwned>(value: &T) -> T {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                if let Cow::Owned(clean) = printable(s) {
                    *s = clean;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            serde_json::Value::Object(fields) => fields.values_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(value).expect("a reply serializes");
    walk(&mut v);
    serde_json::from_value(v).expect("escaped strings are still strings")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_plain_text_is_kept() {
        assert!(matches!(printable("node-a"), Cow::Borrowed("node-a")));
        assert_eq!(
            printable("a\nbeat   node=forged auth=verified"),
            "a\\nbeat   node=forged auth=verified"
        );
        assert_eq!(printable("\u{1b}[2J\u{9b}31m"), "\\u{1b}[2J\\u{9b}31m");
        assert_eq!(printable("tab\there"), "tab\\there");
        assert_eq!(printable("C:\\n"), "C:\\\\n");
        assert_eq!(printable("ünïcode ✓"), "ünïcode ✓");
    }

    #[test]
    fn every_string_of_a_reply_is_made_printable() {
        let v: Vec<(String, u32)> = vec![("\u{1b}]0;owned\u{7}".into(), 1), ("ok".into(), 2)];
        assert_eq!(
            printable_all(&v),
            vec![
                ("\\u{1b}]0;owned\\u{7}".to_owned(), 1),
                ("ok".to_owned(), 2)
            ]
        );
    }
}
