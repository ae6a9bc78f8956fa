//! The prefixes kernel lines carry in the wild, seen through so rules match the text.
//!
//! Not a list of known stamps: a line is peeled, envelope by envelope, until what is
//! left is the kernel's own text. An envelope is anything a log pipeline puts in front:
//! a /dev/kmsg record header (`6,1234,5678,-;`), `dmesg -x`'s `kern  :err   : `, a
//! priority (`<4>`), a log header that ends in the `kernel:` tag after a clock (syslog
//! with or without a host, journalctl's formats, RFC 3339, year-first stamps with a
//! severity word, month names of any language), bracketed stamps (`[  123.456789]`,
//! `dmesg -H`'s `[  +0,000002]` and `[Apr19 18:52]`, `dmesg -T` in any language), caller
//! ids (`[ T123]`, `[  C0]`), a stamp cut off at its start (`60836.026949] `), and console
//! text glued before a stamp (`login: [   35.1] `). The level, where the envelope says
//! it, is kept.

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
    /// The console level (0 emerg .. 7 debug), where an envelope says it.
    pub level: Option<u8>,
}

/// Most envelopes peeled from one line (a bound, not a limit ever met).
const MAX_ENVELOPES: usize = 8;

/// Strip every prefix from `line`.
pub fn strip(line: &str) -> Stripped<'_> {
    let mut s = line.trim_end_matches(['\n', '\r']);
    // Terminal programs that log a serial console show CR LF as symbols.
    s = s.trim_end_matches(['␍', '␊']);
    let mut out = Stripped {
        text: s,
        time: None,
        caller: None,
        level: None,
    };
    for n in 0..MAX_ENVELOPES {
        let Some(rest) = peel(s, &mut out, n == 0) else {
            break;
        };
        s = rest;
    }
    out.text = s;
    out
}

/// Take one envelope off `s`, noting what it says in `out`; `first`: nothing was taken
/// off yet (console text is glued only to the start of a line).
fn peel<'a>(s: &'a str, out: &mut Stripped<'_>, first: bool) -> Option<&'a str> {
    // Leading blanks before an envelope belong to the pipeline; before text, to the
    // kernel (indented report lines), so they stay unless an envelope follows.
    let t = s.trim_start();
    if let Some((rest, time, caller, level)) = kmsg_header(t) {
        out.time = out.time.or(time);
        out.caller = out.caller.or(caller);
        out.level = out.level.or(Some(level));
        return Some(rest);
    }
    if let Some((rest, level)) = facility_level(t) {
        out.level = out.level.or(Some(level));
        return Some(rest);
    }
    if let Some((rest, level)) = priority(t) {
        out.level = out.level.or(Some(level));
        return Some(rest);
    }
    if let Some(rest) = kernel_tag(t) {
        return Some(rest);
    }
    if let Some((rest, time, caller)) = bracketed_stamp(t) {
        out.time = out.time.or(time);
        out.caller = out.caller.or(caller);
        return Some(rest);
    }
    if let Some((rest, time)) = cut_stamp(t) {
        out.time = out.time.or(Some(time));
        return Some(rest);
    }
    if first {
        return glued_before_stamp(s);
    }
    None
}

/// `PRI,SEQ,USEC,FLAGS[,more];text` as /dev/kmsg gives records.
fn kmsg_header(s: &str) -> Option<(&str, Option<f64>, Option<Caller>, u8)> {
    // Cheap refusals first: this runs on every line, most of which are not records.
    if !s.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let end = s.as_bytes().iter().take(96).position(|b| *b == b';')?;
    let (head, rest) = (&s[..end], &s[end + 1..]);
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
    let level = (pri.parse::<u32>().ok()? & 7) as u8;
    let time = usec.parse::<u64>().ok().map(|u| u as f64 / 1e6);
    let caller = fields
        .find_map(|f| f.strip_prefix("caller="))
        .and_then(parse_caller);
    Some((rest, time, caller, level))
}

const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warn", "notice", "info", "debug",
];
const FACILITIES: [&str; 20] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

/// `dmesg -x`: `kern  :err   : `.
fn facility_level(s: &str) -> Option<(&str, u8)> {
    if !s.as_bytes().first()?.is_ascii_lowercase() {
        return None;
    }
    let colon = s.as_bytes().iter().take(12).position(|b| *b == b':')?;
    let (facility, rest) = (&s[..colon], &s[colon + 1..]);
    let (level, rest) = rest.split_once(':')?;
    if !FACILITIES.contains(&facility.trim_end()) {
        return None;
    }
    let level = LEVELS.iter().position(|l| *l == level.trim_end())? as u8;
    Some((rest.strip_prefix(' ').unwrap_or(rest), level))
}

fn priority(s: &str) -> Option<(&str, u8)> {
    let rest = s.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    (end > 0 && end <= 3 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| {
        (
            &rest[end + 1..],
            (digits.parse::<u32>().unwrap_or(0) & 7) as u8,
        )
    })
}

/// Whether `s` holds a clock: `H:MM` or `HH:MM:SS` (digits around colons).
fn has_clock(s: &str) -> bool {
    let b = s.as_bytes();
    (1..b.len().saturating_sub(2)).any(|i| {
        b[i] == b':'
            && b[i - 1].is_ascii_digit()
            && b[i + 1].is_ascii_digit()
            && b[i + 2].is_ascii_digit()
    })
}

/// The tags a log pipeline writes before a kernel message.
const KERNEL_TAGS: [&str; 3] = ["kernel: ", "kernel:", "[kernel] "];

/// A log header ending in the kernel tag: `kernel: ` alone, or after a head that holds
/// a clock (the date, host and severity in any format and language around it), at most
/// six words long.
fn kernel_tag(s: &str) -> Option<&str> {
    for tag in KERNEL_TAGS {
        if let Some(rest) = s.strip_prefix(tag) {
            return Some(rest.strip_prefix(' ').unwrap_or(rest));
        }
    }
    // Only the first few words: a kernel message that says "kernel:" further on keeps it.
    let window = &s.as_bytes()[..s.len().min(120)];
    // "kernel" in the window (a SIMD search: this runs on every line), then what stands
    // around it.
    let at = memchr::memmem::find_iter(window, b"kernel").find_map(|i| {
        let before = i.checked_sub(1).map(|j| window[j]);
        match (before, window.get(i + 6)) {
            (Some(b' '), Some(b':')) => Some(i - 1),
            (Some(b'['), Some(b']')) if i >= 2 && window[i - 2] == b' ' => Some(i - 2),
            _ => None,
        }
    })?;
    let tag = KERNEL_TAGS.iter().find(|t| s[at + 1..].starts_with(**t))?;
    let head = &s[..at];
    if !has_clock(head) || head.split_whitespace().count() > 6 {
        return None;
    }
    let rest = &s[at + 1 + tag.len()..];
    Some(rest.strip_prefix(' ').unwrap_or(rest))
}

/// A bracket at the start and what follows it (one space after it is eaten).
fn bracketed(s: &str) -> Option<(&str, &str)> {
    let rest = s.strip_prefix('[')?;
    let end = rest.find(']')?;
    let after = &rest[end + 1..];
    Some((&rest[..end], after.strip_prefix(' ').unwrap_or(after)))
}

/// `[  123.456789]`, `[  +0,000002]` (seconds, a fraction of at least three digits), or a
/// date with a clock (`dmesg -T` in any language, `dmesg -H`'s `[Apr19 18:52]`,
/// `[22:22:59:905]`), or a caller id.
fn bracketed_stamp(s: &str) -> Option<(&str, Option<f64>, Option<Caller>)> {
    let (inside, rest) = bracketed(s)?;
    let t = inside.trim();
    if let Some(secs) = seconds(t) {
        return Some((rest, secs, None));
    }
    if let Some(c) = parse_caller(t) {
        return Some((rest, None, Some(c)));
    }
    let date = t.len() <= 40
        && has_clock(t)
        && t.split_whitespace().count() <= 6
        && t.chars()
            .all(|c| c.is_alphanumeric() || " .,:+-/".contains(c));
    date.then_some((rest, None, None))
}

/// `123.456789` or `+0,000002` (a dmesg stamp: seconds and at least three decimals), and
/// its value when it is absolute.
fn seconds(t: &str) -> Option<Option<f64>> {
    let (relative, t) = match t.strip_prefix('+') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let (whole, frac) = t.split_once(['.', ','])?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    (digits(whole) && digits(frac) && frac.len() >= 3).then(|| {
        if relative {
            return None;
        }
        // By hand: no allocation on the path every dmesg line takes.
        let w: u64 = whole.parse().ok()?;
        let f: u64 = frac.get(..frac.len().min(9))?.parse().ok()?;
        Some(w as f64 + f as f64 / 10f64.powi(frac.len().min(9) as i32))
    })
}

/// A stamp that lost its `[` (a truncated journal line): `60836.026949] `.
fn cut_stamp(s: &str) -> Option<(&str, f64)> {
    if !s.as_bytes().first()?.is_ascii_digit() {
        return None;
    }
    let end = s.as_bytes().iter().take(24).position(|b| *b == b']')?;
    if s.as_bytes().get(end + 1) != Some(&b' ') {
        return None;
    }
    let secs = seconds(&s[..end])??;
    Some((&s[end + 2..], secs))
}

/// Console text glued before a dmesg stamp (`syzkaller login: [  35.18] `, a shell
/// prompt, another program's output): the stamp is where the kernel's line starts.
fn glued_before_stamp(s: &str) -> Option<&str> {
    let window = s.get(..s.len().min(160)).unwrap_or(s);
    let mut from = 1;
    while let Some(i) = window.get(from..)?.find('[') {
        let at = from + i;
        if let Some((inside, _)) = bracketed(&s[at..])
            && seconds(inside.trim()).is_some()
        {
            return Some(&s[at..]);
        }
        from = at + 1;
    }
    None
}

fn parse_caller(s: &str) -> Option<Caller> {
    let s = s.trim();
    let (kind, num) = s.split_at_checked(1)?;
    let n: u32 = num.trim_start().parse().ok()?;
    match kind {
        "T" => Some(Caller::Task(n)),
        "C" => Some(Caller::Cpu(n)),
        _ => None,
    }
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
                caller: None,
                level: None,
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

    #[test]
    fn pipelines_not_seen_before_are_peeled_to_the_kernel_text() {
        for line in [
            format!("Jun  4 22:32:45 kernel: [    5.100000] {TEXT}"),
            format!("фев 12 00:48:02 kernel: {TEXT}"),
            format!("set 03 13:04:29 bazzite kernel: {TEXT}"),
            format!("2025 Jul  2 06:56:57.749624 sonic_testbed ERR kernel: [  993.616601] {TEXT}"),
            format!("Jan 27 14:08:57 [kernel] {TEXT}"),
            format!("Mar  3 10:00:01 host kernel:[  12.345678] {TEXT}"),
            format!("kernel: {TEXT}"),
            format!("[  +0,000002] {TEXT}"),
            format!("[Apr19 18:52] {TEXT}"),
            format!("[wo jul 28 05:19:47 2021] {TEXT}"),
            format!("[lun may  5 18:11:41 2025] {TEXT}"),
            format!("kern  :warn  : [    3.078160] [      T0] {TEXT}"),
            format!("60836.026949] {TEXT}"),
            format!("syzkaller login: [   35.184476] {TEXT}"),
            format!("root@debian:~# [  212.473177] {TEXT}"),
            format!("        [  797.730264] {TEXT}"),
            format!("[22:22:59:905] [    0.645489] {TEXT}␍␊"),
            format!("<4>[  123.456789][    C3] {TEXT}"),
        ] {
            assert_eq!(strip(&line).text, TEXT, "{line}");
        }
    }

    #[test]
    fn the_level_is_kept_where_an_envelope_says_it() {
        assert_eq!(strip(&format!("3,12,34,-;{TEXT}")).level, Some(3));
        assert_eq!(strip(&format!("<12>{TEXT}")).level, Some(4));
        assert_eq!(strip(&format!("kern  :err   : {TEXT}")).level, Some(3));
        assert_eq!(strip(TEXT).level, None);
    }

    #[test]
    fn kernel_text_that_resembles_an_envelope_is_kept() {
        for line in [
            "[ INFO: possible circular locking dependency detected ]",
            "[ BUG: bad unlock balance detected! ]",
            "  ESR = 0x0000000096000005",
            " ? __schedule+0x3e4/0x1540",
            "audit: type=1400 audit(12:34:56.789:1): apparmor=\"DENIED\" comm=\"kernel: x\" a b c d e f g",
            "[ 0] RxErr",
            "[drm:intel_pipe_update_end [i915]] *ERROR* Atomic update failure",
        ] {
            assert_eq!(strip(line).text, line, "{line}");
        }
    }
}
