//! The previous boot's crash, from pstore: the kernel keeps its last dmesg across a
//! reset (ramoops, EFI variables, ERST), shows it in `/sys/fs/pstore`, and
//! systemd-pstore moves it to `/var/lib/systemd/pstore`. Each dump becomes one incident,
//! through the same classifier and report assembler as live lines.
//!
//! Formats, with their sources, are in `watchdog/tests/fixtures/pstore/FORMATS.md`:
//! files `dmesg-<backend>-<id>[.enc.z]`; each record starts with a `Panic#1 Part2`
//! header; Part1 holds the newest lines, so a dump split in parts (EFI, ERST) reads
//! PartN first; `.enc.z` is a record the kernel could not decompress (raw deflate since
//! Linux 6.6, the zlib wrapper before 4.19); the record time is the file's mtime, or
//! for EFI the id (`(seconds * 100 + part) * 1000 + count`). systemd-pstore keeps EFI
//! and ERST parts in a directory each, with the dump put together as `dmesg.txt`
//! (headers included, PartN first), and copies ramoops records to its top level.
use std::{
    collections::BTreeMap,
    io::Read as _,
    path::{Path, PathBuf},
    sync::LazyLock,
    time::UNIX_EPOCH,
};

use regex::Regex;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{
    incidents::{Incident, Kind},
    judging::kmsg::{RuleSet, report::assemble_log},
};

/// Where the kernel shows pstore records, and where systemd-pstore archives them.
pub const SYSFS: &str = "/sys/fs/pstore";
pub const SYSTEMD_ARCHIVE: &str = "/var/lib/systemd/pstore";

/// A record file is read only up to this size (backends hold 1 KiB to 64 KiB).
const MAX_RECORD: u64 = 1 << 20;

static FILE_NAME: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^dmesg-(ramoops|efi|efi_pstore|erst)-(\d+)(\.enc\.z)?$").unwrap()
});

static PMSG_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^pmsg-(ramoops)-(\d+)$").unwrap());

/// How the daemon's line in `/dev/pmsg0` starts: the next boot's harvest finds it in
/// the `pmsg-ramoops-N` record (see [`write_pmsg`]).
pub const PMSG_PREFIX: &str = "watchdog: heartbeat stopped: ";

/// The dump reason of a line the daemon left in pmsg.
const PMSG_REASON: &str = "Watchdog";

static HEADER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"^(Panic|Oops|Emergency|Shutdown|Unknown|Restart|Halt|Poweroff)#(\d+) Part(\d+)$")
        .unwrap()
});

/// Where a previous boot's incident came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreviousBoot {
    /// `ramoops`, `efi`, `erst`, or `systemd-pstore` for an archive of unknown backend.
    pub backend: String,
    /// Why the kernel dumped (`Panic`, `Oops`, ...) and its dump count in that boot.
    pub reason: String,
    pub count: u32,
    /// The files it was read from.
    pub files: Vec<PathBuf>,
    /// When the record was written (ms since the epoch).
    pub record_unix_ms: u64,
    /// The crashed boot's id: pstore records do not carry it.
    pub boot_id: Option<String>,
    /// SHA-256 of the dump's text: the same dump found again is not a second incident.
    pub key: String,
}

/// One dump, put together from its parts.
#[derive(Clone, Debug, PartialEq)]
pub struct Dump {
    pub origin: PreviousBoot,
    /// The log lines, oldest first, without the part headers.
    pub body: String,
}

/// A file that is no record, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Refused {
    pub path: PathBuf,
    pub why: String,
}

/// One record file, read and checked.
struct Part {
    backend: String,
    id: u64,
    reason: String,
    count: u32,
    part: u32,
    time_ms: u64,
    path: PathBuf,
    /// The lines after the header.
    body: String,
}

fn mtime_ms(path: &Path) -> u64 {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_millis() as u64)
}

/// A record file's bytes, up to [`MAX_RECORD`].
fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_RECORD).read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read it: {e}"))?;
    Ok(bytes)
}

/// The paths in `dir`, sorted (none if it cannot be read: a host without pstore).
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    paths.sort();
    paths
}

/// A backend as file names give it (`efi_pstore` is the newer kernels' `efi`).
fn backend_name(name: &str) -> &str {
    if name == "efi_pstore" { "efi" } else { name }
}

/// An EFI record's time: its id is `(seconds * 100 + part) * 1000 + count`.
fn efi_time_ms(id: u64) -> u64 {
    id / 100_000 * 1000
}

/// A compressed record: raw deflate (Linux 6.6 and later, and the deflate of 4.19 to
/// 6.5), else the zlib wrapper (3.11 to 4.18).
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let raw = flate2::read::DeflateDecoder::new(bytes)
        .take(MAX_RECORD)
        .read_to_end(&mut out);
    if raw.is_ok() && !out.is_empty() {
        return Ok(out);
    }
    out.clear();
    flate2::read::ZlibDecoder::new(bytes)
        .take(MAX_RECORD)
        .read_to_end(&mut out)
        .map_err(|e| format!("compressed record does not inflate (raw deflate or zlib): {e}"))?;
    Ok(out)
}

/// The header and the rest of a record's text.
fn split_header(text: &str) -> Result<(String, u32, u32, String), String> {
    let (first, rest) = text.split_once('\n').unwrap_or((text, ""));
    let caps = HEADER.captures(first.trim_end()).ok_or_else(|| {
        format!(
            "no pstore dmesg header (`Panic#1 Part1`) on the first line: {:?}",
            first.chars().take(40).collect::<String>()
        )
    })?;
    Ok((
        caps[1].to_owned(),
        caps[2].parse().unwrap_or(0),
        caps[3].parse().unwrap_or(0),
        rest.to_owned(),
    ))
}

fn read_part(path: &Path, backend: &str, id: u64, compressed: bool) -> Result<Part, String> {
    let mut bytes = read_bounded(path)?;
    if compressed {
        bytes = inflate(&bytes)?;
    }
    let text = String::from_utf8_lossy(&bytes);
    let (reason, count, part, body) = split_header(&text)?;
    let backend = backend_name(backend);
    // EFI names its records after the time: the id is the record's own clock.
    let time_ms = match backend {
        "efi" => efi_time_ms(id),
        _ => mtime_ms(path),
    };
    Ok(Part {
        backend: backend.to_owned(),
        id,
        reason,
        count,
        part,
        time_ms,
        path: path.to_owned(),
        body,
    })
}

fn key_of(body: &str) -> String {
    let digest = Sha256::digest(body.trim_end().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Records written within this long of each other, with the same reason and count,
/// are parts of one dump.
const SAME_DUMP_MS: u64 = 120_000;

/// Put parts together: the same backend, reason and count, close in time; PartN first.
fn assemble(mut parts: Vec<Part>) -> Vec<Dump> {
    parts.sort_by_key(|p| {
        (
            p.backend.clone(),
            p.reason.clone(),
            p.count,
            p.time_ms,
            p.id,
        )
    });
    let mut groups: Vec<Vec<Part>> = Vec::new();
    for p in parts {
        match groups.last_mut() {
            Some(g)
                if g[0].backend == p.backend
                    && g[0].reason == p.reason
                    && g[0].count == p.count
                    && p.time_ms.abs_diff(g[0].time_ms) <= SAME_DUMP_MS
                    && !g.iter().any(|q| q.part == p.part) =>
            {
                g.push(p)
            }
            _ => groups.push(vec![p]),
        }
    }
    groups
        .into_iter()
        .map(|mut g| {
            g.sort_by_key(|p| std::cmp::Reverse(p.part));
            let body: String = g.iter().map(|p| p.body.as_str()).collect();
            Dump {
                origin: PreviousBoot {
                    backend: g[0].backend.clone(),
                    reason: g[0].reason.clone(),
                    count: g[0].count,
                    files: g.iter().map(|p| p.path.clone()).collect(),
                    record_unix_ms: g.iter().map(|p| p.time_ms).min().unwrap_or(0),
                    boot_id: None,
                    key: key_of(&body),
                },
                body,
            }
        })
        .collect()
}

/// A systemd-pstore `dmesg.txt`: the parts' texts, PartN first, headers included.
fn read_archived(path: &Path) -> Result<Dump, String> {
    let text = read_bounded(path)?;
    let text = String::from_utf8_lossy(&text);
    let (reason, count, _, _) = split_header(&text)?;
    let body: String = text
        .split_inclusive('\n')
        .filter(|l| !HEADER.is_match(l.trim_end()))
        .collect();
    let dir = path.parent().unwrap_or(Path::new("."));
    // The parts it was made of, kept beside it: their names say the backend and time.
    let parts: Vec<(String, u64, PathBuf)> = entries(dir)
        .into_iter()
        .filter_map(|path| {
            let name = path.file_name()?.to_string_lossy().into_owned();
            let caps = FILE_NAME.captures(&name)?;
            Some((caps[1].to_owned(), caps[2].parse().ok()?, path))
        })
        .collect();
    let backend = parts
        .first()
        .map_or("systemd-pstore", |p| backend_name(&p.0))
        .to_owned();
    let record_unix_ms = match backend.as_str() {
        "efi" => parts.iter().map(|p| efi_time_ms(p.1)).min().unwrap_or(0),
        _ => parts
            .iter()
            .map(|p| mtime_ms(&p.2))
            .min()
            .unwrap_or_else(|| mtime_ms(path)),
    };
    let mut files: Vec<PathBuf> = parts.into_iter().map(|p| p.2).collect();
    files.sort();
    files.push(path.to_owned());
    Ok(Dump {
        origin: PreviousBoot {
            backend,
            reason,
            count,
            files,
            record_unix_ms,
            boot_id: None,
            key: key_of(&body),
        },
        body,
    })
}

/// The daemon's lines in a pmsg record (userspace messages kept across a reset): each
/// says why it stopped the heartbeat before the node went down.
fn read_pmsg(path: &Path, backend: &str) -> Vec<Dump> {
    let text = read_bounded(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with(PMSG_PREFIX))
        .map(|line| Dump {
            origin: PreviousBoot {
                backend: backend.to_owned(),
                reason: PMSG_REASON.to_owned(),
                count: 0,
                files: vec![path.to_owned()],
                record_unix_ms: mtime_ms(path),
                boot_id: None,
                key: key_of(line),
            },
            body: format!("{line}\n"),
        })
        .collect()
}

/// Write `reason` where the next boot's harvest can read it: one line to `device`
/// (`/dev/pmsg0`, kept by ramoops across a reset). Quietly nothing where there is no
/// such device.
pub fn write_pmsg(device: &Path, reason: &str) {
    use std::io::Write as _;
    let line = format!("{PMSG_PREFIX}{}\n", reason.replace('\n', " "));
    match std::fs::OpenOptions::new().append(true).open(device) {
        Ok(mut f) => {
            if let Err(e) = f.write_all(line.as_bytes()) {
                tracing::warn!(device = %device.display(), error = %e, "could not write the stop's reason for the next boot");
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::debug!(device = %device.display(), error = %e, "no pmsg to write the stop's reason to")
        }
    }
}

/// Every dump in `dir`: a pstore mount (its `dmesg-*` records), or a systemd-pstore
/// archive (`dmesg.txt` in its subdirectories; records copied to its top level, such
/// as ramoops ones, are read as records). Other files (`console-*`, `pmsg-*`) are no
/// crash dumps and are left alone. Files that look like records and are not are
/// refused, each with the reason.
pub fn harvest_dir(dir: &Path) -> (Vec<Dump>, Vec<Refused>) {
    let mut parts = Vec::new();
    let mut dumps = Vec::new();
    let mut refused = Vec::new();
    for path in entries(dir) {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if path.is_dir() {
            // systemd-pstore: <dir>/dmesg.txt, or <ts>/<count>/dmesg.txt for EFI.
            for txt in [path.join("dmesg.txt")]
                .into_iter()
                .chain(entries(&path).iter().map(|p| p.join("dmesg.txt")))
                .filter(|p| p.is_file())
            {
                match read_archived(&txt) {
                    Ok(d) => dumps.push(d),
                    Err(why) => refused.push(Refused { path: txt, why }),
                }
            }
            continue;
        }
        if let Some(caps) = PMSG_NAME.captures(&name) {
            dumps.extend(read_pmsg(&path, &caps[1]));
            continue;
        }
        let Some(caps) = FILE_NAME.captures(&name) else {
            continue;
        };
        let id = caps[2].parse().unwrap_or(0);
        match read_part(&path, &caps[1], id, caps.get(3).is_some()) {
            Ok(p) => parts.push(p),
            Err(why) => refused.push(Refused { path, why }),
        }
    }
    dumps.extend(assemble(parts));
    (dumps, refused)
}

/// The class a dump is of when no line of it is a known problem: what the kernel said
/// it dumped for.
fn class_of_reason(reason: &str) -> &'static str {
    match reason {
        "Panic" => "panic",
        "Oops" => "oops",
        _ => "none",
    }
}

/// A dump as an incident of `host`: its most severe report (the first of equals), with
/// the record's time.
pub fn incident(dump: &Dump, rules: &RuleSet, host: &str) -> Incident {
    let reports = assemble_log(rules, &dump.body);
    let worst = reports
        .iter()
        .enumerate()
        .max_by_key(|(i, r)| (r.severity, std::cmp::Reverse(*i)))
        .map(|(_, r)| r.clone());
    let o = &dump.origin;
    if o.reason == PMSG_REASON {
        let reason = dump.body.trim_end().trim_start_matches(PMSG_PREFIX);
        let summary = format!(
            "previous boot ({} pmsg): the watchdog stopped the heartbeat: {reason}",
            o.backend
        );
        return Incident {
            previous_boot: Some(o.clone()),
            ..Incident::new(
                Kind::KernelReport,
                "heartbeat-stopped",
                summary,
                host,
                o.record_unix_ms,
            )
        };
    }
    let (class, line) = match &worst {
        Some(r) => (r.class.as_str().to_owned(), r.first_line.clone()),
        None => (
            class_of_reason(&o.reason).to_owned(),
            "no line of it is a known kernel problem".to_owned(),
        ),
    };
    let summary = format!(
        "previous boot ({}, {}#{}): {line}",
        o.backend, o.reason, o.count
    );
    Incident {
        pid: worst.as_ref().and_then(|r| r.pid),
        comm: worst.as_ref().and_then(|r| r.comm.clone()),
        report: worst,
        previous_boot: Some(o.clone()),
        ..Incident::new(Kind::KernelReport, &class, summary, host, o.record_unix_ms)
    }
}

/// Dumps with the same text are one (the same record in pstore and in the archive):
/// the first of each is kept.
pub fn dedup(dumps: Vec<Dump>) -> Vec<Dump> {
    let mut seen = BTreeMap::new();
    dumps
        .into_iter()
        .filter(|d| seen.insert(d.origin.key.clone(), ()).is_none())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixtures(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/pstore")
            .join(name)
    }

    #[test]
    fn a_ramoops_panic_is_one_dump_and_one_oops_incident() {
        let (dumps, refused) = harvest_dir(&fixtures("sysfs-ramoops"));
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(dumps.len(), 1, "console-ramoops is no dump");
        let d = &dumps[0];
        assert_eq!(
            (
                d.origin.backend.as_str(),
                d.origin.reason.as_str(),
                d.origin.count
            ),
            ("ramoops", "Panic", 1)
        );
        let inc = incident(d, &RuleSet::builtin(), "db-1");
        assert!(
            inc.summary
                .starts_with("previous boot (ramoops, Panic#1): "),
            "{}",
            inc.summary
        );
        assert!(
            matches!(inc.class.as_str(), "bug" | "oops" | "panic"),
            "{}",
            inc.class
        );
    }

    #[test]
    fn efi_parts_are_put_back_in_order() {
        let (dumps, refused) = harvest_dir(&fixtures("sysfs-efi-multipart"));
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(dumps.len(), 1);
        let expected =
            std::fs::read_to_string(fixtures("sysfs-efi-multipart.expected.txt")).unwrap();
        assert_eq!(dumps[0].body, expected);
        assert_eq!(dumps[0].origin.files.len(), 3);
        assert_eq!(dumps[0].origin.record_unix_ms, 1_718_967_154_000);
    }

    #[test]
    fn the_systemd_archive_of_the_same_crash_is_the_same_dump() {
        let (sysfs, _) = harvest_dir(&fixtures("sysfs-efi-multipart"));
        let (archive, refused) = harvest_dir(&fixtures("systemd-archive"));
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(archive.len(), 1);
        assert_eq!(archive[0].origin.key, sysfs[0].origin.key);
        assert_eq!(archive[0].origin.backend, "efi");
        let both = dedup(sysfs.into_iter().chain(archive).collect());
        assert_eq!(both.len(), 1);
    }

    #[test]
    fn a_compressed_record_inflates_to_its_text() {
        let (dumps, refused) = harvest_dir(&fixtures("sysfs-compressed"));
        assert!(refused.is_empty(), "{refused:?}");
        let expected = std::fs::read_to_string(fixtures("sysfs-compressed.expected.txt")).unwrap();
        let (_, _, _, body) = split_header(&expected).unwrap();
        assert_eq!(dumps[0].body, body);
    }

    #[test]
    fn the_daemons_line_in_pmsg_is_read_back_as_why_it_stopped() {
        let dir = std::env::temp_dir().join(format!("wd-pmsg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let device = dir.join("pmsg-ramoops-0");
        std::fs::write(&device, "some other program's line\n").unwrap();
        write_pmsg(&device, "thread 8 (stuck) of pid 6: vfork");
        write_pmsg(&dir.join("no-such-device"), "nothing: quietly");
        let (dumps, refused) = harvest_dir(&dir);
        assert!(refused.is_empty());
        assert_eq!(dumps.len(), 1);
        let inc = incident(&dumps[0], &RuleSet::builtin(), "db-1");
        assert_eq!(
            inc.summary,
            "previous boot (ramoops pmsg): the watchdog stopped the heartbeat: thread 8 (stuck) of pid 6: vfork"
        );
        assert!(!dir.join("no-such-device").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_erst_record_is_read() {
        let (dumps, refused) = harvest_dir(&fixtures("sysfs-erst"));
        assert!(refused.is_empty(), "{refused:?}");
        assert_eq!(dumps[0].origin.backend, "erst");
    }

    #[test]
    fn garbage_is_refused_with_the_reason_and_makes_no_dump() {
        let (dumps, refused) = harvest_dir(&fixtures("garbage"));
        assert!(dumps.is_empty(), "{dumps:?}");
        assert_eq!(refused.len(), 3, "{refused:?}");
        let why = |name: &str| {
            refused
                .iter()
                .find(|r| r.path.ends_with(name))
                .map(|r| r.why.clone())
                .unwrap()
        };
        assert!(why("dmesg-ramoops-2").contains("no pstore dmesg header"));
        assert!(why("dmesg-efi-123").contains("no pstore dmesg header"));
        assert!(
            why("dmesg-ramoops-3.enc.z").contains("does not inflate"),
            "{}",
            why("dmesg-ramoops-3.enc.z")
        );
    }
}
