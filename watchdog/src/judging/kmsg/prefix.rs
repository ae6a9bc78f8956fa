//! The prefixes kernel lines carry in the wild, seen through so rules match the text.
//!
//! In the order they nest: a syslog header (`Mon DD HH:MM:SS host kernel: `, or an
//! RFC 3339 stamp) or a /dev/kmsg record header (`6,1234,5678,-;`), a priority
//! (`<4>`), a dmesg timestamp (`[  123.456789]`, or `dmesg -T`'s `[Mon Nov 23 01:02:03
//! 2026]`), and a caller id (`[ T123]`, `[  C0]`).

/// Who printed a line, from a caller id prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Caller {
    Task(u32),
    Cpu(u32),
}

/// A line with its prefixes taken off.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stripped<'a> {
    pub text: &'a str,
    /// Seconds since boot, from a dmesg timestamp or a /dev/kmsg header.
    pub time: Option<f64>,
    pub caller: Option<Caller>,
}

/// Strip every known prefix from `line`.
pub fn strip(line: &str) -> Stripped<'_> {
    let mut s = line.trim_end_matches(['\n', '\r']);
    let mut time = None;
    let mut caller = None;
    if let Some((rest, t, c)) = kmsg_header(s) {
        s = rest;
        time = t;
        caller = c;
    } else if let Some(rest) = syslog_header(s) {
        s = rest;
    }
    if let Some(rest) = priority(s) {
        s = rest;
    }
    if let Some((rest, t)) = dmesg_time(s) {
        s = rest;
        time = time.or(t);
    }
    if let Some((rest, c)) = caller_id(s) {
        s = rest;
        caller = caller.or(Some(c));
    }
    Stripped {
        text: s,
        time,
        caller,
    }
}

/// `PRI,SEQ,USEC,FLAGS[,more];text` as /dev/kmsg gives records.
fn kmsg_header(s: &str) -> Option<(&str, Option<f64>, Option<Caller>)> {
    let (head, rest) = s.split_once(';')?;
    let mut fields = head.split(',');
    let pri = fields.next()?;
    let seq = fields.next()?;
    let usec = fields.next()?;
    let _flags = fields.next()?;
    if ![pri, seq, usec]
        .iter()
        .all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let time = usec.parse::<u64>().ok().map(|u| u as f64 / 1e6);
    let caller = fields
        .find_map(|f| f.strip_prefix("caller="))
        .and_then(parse_caller);
    Some((rest, time, caller))
}

/// `Mon DD HH:MM:SS host kernel: ` or `2026-11-23T01:02:03.456789+00:00 host kernel: `.
fn syslog_header(s: &str) -> Option<&str> {
    let idx = s.find(" kernel: ")?;
    let head = &s[..idx];
    let mut words = head.split_whitespace();
    let first = words.next()?;
    let looks_like_date = if first.len() == 3 && first.chars().all(|c| c.is_ascii_alphabetic()) {
        // "Nov 23 01:02:03 host"
        let day = words.next()?;
        let clock = words.next()?;
        day.bytes().all(|b| b.is_ascii_digit())
            && clock.matches(':').count() == 2
            && words.count() == 1
    } else {
        // RFC 3339 stamp then host
        first.len() >= 19
            && first.as_bytes()[4] == b'-'
            && first.contains('T')
            && words.count() == 1
    };
    looks_like_date.then(|| &s[idx + " kernel: ".len()..])
}

fn priority(s: &str) -> Option<&str> {
    let rest = s.strip_prefix('<')?;
    let end = rest.find('>')?;
    (end > 0 && end <= 3 && rest[..end].bytes().all(|b| b.is_ascii_digit()))
        .then(|| &rest[end + 1..])
}

/// A bracketed prefix and what follows it (one space after it is eaten).
fn bracketed(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(']')?;
    let after = &rest[end + 1..];
    Some((&rest[..end], after.strip_prefix(' ').unwrap_or(after)))
}

fn dmesg_time(s: &str) -> Option<(&str, Option<f64>)> {
    let (inside, rest) = bracketed(s)?;
    let t = inside.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') && t.contains('.') {
        return Some((rest, t.parse().ok()));
    }
    // dmesg -T: "Mon Nov 23 01:02:03 2026"
    let words: Vec<&str> = t.split_whitespace().collect();
    let human = words.len() == 5
        && words[0].len() == 3
        && words[3].matches(':').count() == 2
        && words[4].len() == 4
        && words[4].bytes().all(|b| b.is_ascii_digit());
    human.then_some((rest, None))
}

fn parse_caller(s: &str) -> Option<Caller> {
    let s = s.trim();
    let (kind, num) = s.split_at_checked(1)?;
    let n: u32 = num.parse().ok()?;
    match kind {
        "T" => Some(Caller::Task(n)),
        "C" => Some(Caller::Cpu(n)),
        _ => None,
    }
}

fn caller_id(s: &str) -> Option<(&str, Caller)> {
    let (inside, rest) = bracketed(s)?;
    parse_caller(inside).map(|c| (rest, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "BUG: kernel NULL pointer dereference, address: 0000000000000008";

    #[test]
    fn plain_lines_pass_through() {
        assert_eq!(
            strip(TEXT),
            Stripped {
                text: TEXT,
                time: None,
                caller: None
            }
        );
    }

    #[test]
    fn dmesg_timestamps_and_caller_ids() {
        let line = format!("[  123.456789] [ T4321] {TEXT}");
        let s = strip(&line);
        assert_eq!(s.text, TEXT);
        assert_eq!(s.time, Some(123.456789));
        assert_eq!(s.caller, Some(Caller::Task(4321)));
        let line = format!("[    0.000000] [    C0] {TEXT}");
        let s = strip(&line);
        assert_eq!((s.text, s.caller), (TEXT, Some(Caller::Cpu(0))));
        let line = format!("[Mon Nov 23 01:02:03 2026] {TEXT}");
        let s = strip(&line);
        assert_eq!(s.text, TEXT);
    }

    #[test]
    fn syslog_headers() {
        let line = format!("Nov 23 01:02:03 db-1 kernel: [ 5321.118] {TEXT}");
        let s = strip(&line);
        assert_eq!((s.text, s.time), (TEXT, Some(5321.118)));
        let line = format!("Nov  3 01:02:03 db-1 kernel: {TEXT}");
        let s = strip(&line);
        assert_eq!(s.text, TEXT);
        let line = format!("2026-11-23T01:02:03.456789+00:00 db-1 kernel: {TEXT}");
        let s = strip(&line);
        assert_eq!(s.text, TEXT);
    }

    #[test]
    fn kmsg_record_headers() {
        let line = format!("6,1234,5678901,-;{TEXT}");
        let s = strip(&line);
        assert_eq!((s.text, s.time), (TEXT, Some(5.678901)));
        let line = format!("4,99,100,-,caller=T77;{TEXT}");
        let s = strip(&line);
        assert_eq!(s.caller, Some(Caller::Task(77)));
        assert_eq!(strip(&format!("<4>{TEXT}")).text, TEXT);
    }

    #[test]
    fn text_that_merely_looks_like_a_prefix_is_kept() {
        for line in [
            "[drm] Initialized",
            "x,y;z",
            "<html>",
            "Nov is a month kernel: no",
        ] {
            assert_eq!(strip(line).text, line);
        }
    }
}
