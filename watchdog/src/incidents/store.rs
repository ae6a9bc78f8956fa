//! Durable incident store: SQLite (rusqlite), one row per incident with its JSON body.
//! Bounded: beyond `max` incidents, the oldest are deleted.
use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use rusqlite::{Connection, OptionalExtension, params};

use crate::incidents::{Incident, IncidentSummary};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("incident store {path}: {source}")]
    Sql {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("incident store {path}: creating its directory: {source}")]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("incident store {path}: incident {id} is unreadable: {source}")]
    Corrupt {
        path: PathBuf,
        id: i64,
        source: serde_json::Error,
    },
}

/// What turns a SQLite error into the store's, naming the database at `path`.
fn sql_error(path: &Path) -> impl Fn(rusqlite::Error) -> StoreError + Copy + '_ {
    move |source| StoreError::Sql {
        path: path.to_owned(),
        source,
    }
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    max: u64,
    /// (device, inode) of the database file as opened: a file deleted or replaced
    /// under the daemon is noticed by it, not written to in vain.
    file: (u64, u64),
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_unix_ms INTEGER NOT NULL,
    kind TEXT NOT NULL,
    class TEXT NOT NULL,
    pid INTEGER,
    tid INTEGER,
    comm TEXT,
    monitored INTEGER NOT NULL,
    stopped_heartbeat INTEGER NOT NULL,
    summary TEXT NOT NULL,
    body TEXT NOT NULL
);
-- Facts the daemon keeps across restarts, by name (the heartbeat's last incarnation).
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
-- The heartbeat stopped by a verdict, until an operator resumes it: a restarted
-- daemon keeps it stopped (one row at most).
CREATE TABLE IF NOT EXISTS latch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    reason TEXT NOT NULL,
    at_unix_ms INTEGER NOT NULL
);
-- Each incident's deliveries, one row per destination (exec-hook, alertmanager),
-- written with the incident: what a crash interrupts is delivered after the restart.
CREATE TABLE IF NOT EXISTS outbox (
    incident_id INTEGER NOT NULL,
    destination TEXT NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    PRIMARY KEY (incident_id, destination)
);
-- Crash dumps of earlier boots already made incidents (pstore), by their text's hash:
-- found again (a restart, the same record in pstore and in systemd's archive), they
-- are not a second incident.
CREATE TABLE IF NOT EXISTS harvested (
    key TEXT PRIMARY KEY,
    incident_id INTEGER NOT NULL
);";

/// What the outbox holds for one destination.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OutboxCounts {
    pub destination: String,
    /// Not delivered yet (failed ones included).
    pub pending: u64,
    /// Not delivered, and at least one attempt failed.
    pub failed: u64,
}

impl Store {
    /// Open (creating if needed) the store at `path`, keeping at most `max` incidents.
    pub fn open(path: &Path, max: u64) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::Dir {
                path: path.to_owned(),
                source,
            })?;
        }
        let sql = sql_error(path);
        let conn = Connection::open(path).map_err(sql)?;
        // WAL: readers (wdctl via the daemon) never block the writer. NORMAL sync is
        // durable across a daemon crash; only a power loss may lose the last commit.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        let meta = std::fs::metadata(path).map_err(|source| StoreError::Dir {
            path: path.to_owned(),
            source,
        })?;
        Ok(Store {
            conn,
            path: path.to_owned(),
            max: max.max(1),
            file: (meta.dev(), meta.ino()),
        })
    }

    /// If the database file was deleted or replaced since it was opened, open it again
    /// (creating it) and say so loudly: what follows is stored, not lost in a file that
    /// is gone. True when it was reopened.
    pub fn reopen_if_gone(&mut self) -> Result<bool, StoreError> {
        let same = std::fs::metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.file);
        if same {
            return Ok(false);
        }
        tracing::error!(
            store = %self.path.display(),
            "the incident store was deleted or replaced while the daemon ran: creating it again (what it held before is not in the new one)"
        );
        *self = Store::open(&self.path, self.max)?;
        Ok(true)
    }

    /// The heartbeat's incarnation for this start, from `choose(last one used)`, kept
    /// for the next start.
    pub fn next_incarnation(
        &mut self,
        choose: impl FnOnce(Option<u64>) -> u64,
    ) -> Result<u64, StoreError> {
        let last: Option<i64> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'incarnation'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        let next = choose(last.map(|v| v as u64));
        self.conn
            .execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('incarnation', ?1)",
                params![next as i64],
            )
            .map_err(self.sql())?;
        Ok(next)
    }

    /// Keep the heartbeat stopped across restarts, with the reason.
    pub fn set_latch(&mut self, reason: &str, at_unix_ms: u64) -> Result<(), StoreError> {
        self.reopen_if_gone()?;
        self.conn
            .execute(
                "INSERT OR REPLACE INTO latch (id, reason, at_unix_ms) VALUES (1, ?1, ?2)",
                params![reason, at_unix_ms as i64],
            )
            .map_err(self.sql())?;
        Ok(())
    }

    /// The operator resumed the heartbeat.
    pub fn clear_latch(&mut self) -> Result<(), StoreError> {
        self.reopen_if_gone()?;
        self.conn
            .execute("DELETE FROM latch", [])
            .map_err(self.sql())?;
        Ok(())
    }

    /// Why the heartbeat was stopped and not resumed before this start, if it was.
    pub fn latch(&self) -> Result<Option<(String, u64)>, StoreError> {
        self.conn
            .query_row(
                "SELECT reason, at_unix_ms FROM latch WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)),
            )
            .optional()
            .map_err(self.sql())
    }

    fn sql(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        sql_error(&self.path)
    }

    /// Store an incident; sets and returns its id.
    pub fn insert(&mut self, inc: &mut Incident) -> Result<i64, StoreError> {
        self.insert_for(inc, &[])
    }

    /// Whether a crash dump with this key was made an incident already.
    pub fn harvested(&self, key: &str) -> Result<bool, StoreError> {
        self.conn
            .query_row(
                "SELECT 1 FROM harvested WHERE key = ?1",
                params![key],
                |_| Ok(()),
            )
            .optional()
            .map(|r| r.is_some())
            .map_err(self.sql())
    }

    /// Store the incident of a crash dump with key `key` (with its deliveries), and
    /// remember the key; None if it was stored before.
    pub fn insert_harvested(
        &mut self,
        inc: &mut Incident,
        destinations: &[&str],
        key: &str,
    ) -> Result<Option<i64>, StoreError> {
        if self.harvested(key)? {
            return Ok(None);
        }
        self.insert_with(inc, destinations, Some(key)).map(Some)
    }

    /// Store an incident and, in the same transaction, its deliveries to each of
    /// `destinations`; sets and returns its id.
    pub fn insert_for(
        &mut self,
        inc: &mut Incident,
        destinations: &[&str],
    ) -> Result<i64, StoreError> {
        self.insert_with(inc, destinations, None)
    }

    /// One transaction: the incident, its deliveries, and the key of the crash dump it
    /// was made from (if it was).
    fn insert_with(
        &mut self,
        inc: &mut Incident,
        destinations: &[&str],
        harvested: Option<&str>,
    ) -> Result<i64, StoreError> {
        self.reopen_if_gone()?;
        // The path apart from the connection, which the transaction borrows.
        let sql = sql_error(&self.path);
        let tx = self.conn.transaction().map_err(sql)?;
        let body = serde_json::to_string(&inc).expect("incidents serialize");
        tx.execute(
            "INSERT INTO incidents (at_unix_ms, kind, class, pid, tid, comm, monitored, stopped_heartbeat, summary, body)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                inc.at_unix_ms as i64,
                inc.kind.as_str(),
                inc.class,
                inc.pid,
                inc.tid,
                inc.comm,
                inc.monitored,
                inc.stopped_heartbeat,
                inc.summary,
                body
            ],
        )
        .map_err(sql)?;
        let id = tx.last_insert_rowid();
        if let Some(key) = harvested {
            tx.execute(
                "INSERT INTO harvested (key, incident_id) VALUES (?1, ?2)",
                params![key, id],
            )
            .map_err(sql)?;
        }
        for dest in destinations {
            tx.execute(
                "INSERT INTO outbox (incident_id, destination) VALUES (?1, ?2)",
                params![id, dest],
            )
            .map_err(sql)?;
        }
        for table in [
            "DELETE FROM incidents WHERE id <= ?1",
            "DELETE FROM outbox WHERE incident_id <= ?1",
        ] {
            tx.execute(table, params![id - self.max as i64])
                .map_err(sql)?;
        }
        tx.commit().map_err(sql)?;
        inc.id = Some(id);
        Ok(id)
    }

    /// The newest `limit` incidents, newest first.
    pub fn list(&self, limit: usize) -> Result<Vec<IncidentSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, at_unix_ms, kind, class, pid, tid, comm, monitored, stopped_heartbeat, summary
                 FROM incidents ORDER BY id DESC LIMIT ?1",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![limit as i64], |r| {
                let kind: String = r.get(2)?;
                Ok(IncidentSummary {
                    id: r.get(0)?,
                    at_unix_ms: r.get::<_, i64>(1)? as u64,
                    kind: serde_json::from_value(serde_json::Value::String(kind))
                        .unwrap_or(crate::incidents::Kind::KernelReport),
                    class: r.get(3)?,
                    pid: r.get(4)?,
                    tid: r.get(5)?,
                    comm: r.get(6)?,
                    monitored: r.get(7)?,
                    stopped_heartbeat: r.get(8)?,
                    summary: r.get(9)?,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// Incidents not yet delivered to `destination` whose next attempt is due by
    /// `now_ms`, oldest first: (incident id, attempts so far).
    pub fn due(&self, destination: &str, now_ms: u64) -> Result<Vec<(i64, u32)>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT incident_id, attempts FROM outbox
                 WHERE destination = ?1 AND delivered = 0 AND next_attempt_ms <= ?2
                 ORDER BY incident_id",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map(params![destination, now_ms as i64], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// Incident `id` was delivered to `destination`: never again.
    pub fn delivered(&mut self, id: i64, destination: &str) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET delivered = 1, attempts = attempts + 1, last_error = NULL
                 WHERE incident_id = ?1 AND destination = ?2",
                params![id, destination],
            )
            .map(drop)
            .map_err(self.sql())
    }

    /// Attempts made so far to deliver incident `id` to `destination`.
    pub fn attempts(&self, id: i64, destination: &str) -> Result<u32, StoreError> {
        self.conn
            .query_row(
                "SELECT attempts FROM outbox WHERE incident_id = ?1 AND destination = ?2",
                params![id, destination],
                |r| r.get(0),
            )
            .optional()
            .map(Option::unwrap_or_default)
            .map_err(self.sql())
    }

    /// Delivering incident `id` to `destination` failed: try again at `next_ms`.
    pub fn failed(
        &mut self,
        id: i64,
        destination: &str,
        error: &str,
        next_ms: u64,
    ) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?3, next_attempt_ms = ?4
                 WHERE incident_id = ?1 AND destination = ?2",
                params![id, destination, error, next_ms as i64],
            )
            .map(drop)
            .map_err(self.sql())
    }

    /// What is pending and what failed, per destination.
    pub fn outbox_counts(&self) -> Result<Vec<OutboxCounts>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT destination, SUM(delivered = 0), SUM(delivered = 0 AND attempts > 0)
                 FROM outbox GROUP BY destination ORDER BY destination",
            )
            .map_err(self.sql())?;
        let rows = stmt
            .query_map([], |r| {
                Ok(OutboxCounts {
                    destination: r.get(0)?,
                    pending: r.get::<_, i64>(1)? as u64,
                    failed: r.get::<_, i64>(2)? as u64,
                })
            })
            .map_err(self.sql())?;
        rows.collect::<Result<Vec<_>, _>>().map_err(self.sql())
    }

    /// One incident, whole.
    pub fn get(&self, id: i64) -> Result<Option<Incident>, StoreError> {
        let body: Option<String> = self
            .conn
            .query_row(
                "SELECT body FROM incidents WHERE id = ?1",
                params![id],
                |r| r.get(0),
            )
            .optional()
            .map_err(self.sql())?;
        body.map(|b| {
            let mut inc: Incident =
                serde_json::from_str(&b).map_err(|source| StoreError::Corrupt {
                    path: self.path.clone(),
                    id,
                    source,
                })?;
            inc.id = Some(id);
            Ok(inc)
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incidents::Kind;

    #[test]
    fn the_outbox_delivers_once_retries_when_due_and_survives_a_reopen() {
        let dir = std::env::temp_dir().join(format!("wd-outbox-{}", std::process::id()));
        let path = dir.join("s.db");
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Store::open(&path, 100).unwrap();
        let a = s
            .insert_for(&mut incident(1), &["exec-hook", "alertmanager"])
            .unwrap();
        let b = s.insert_for(&mut incident(2), &["exec-hook"]).unwrap();
        assert_eq!(s.due("exec-hook", 0).unwrap(), [(a, 0), (b, 0)]);
        s.failed(a, "exec-hook", "exit status 1", 5_000).unwrap();
        s.delivered(b, "exec-hook").unwrap();
        assert_eq!(s.due("exec-hook", 4_999).unwrap(), []);
        // A restart: the store is all there is.
        drop(s);
        let mut s = Store::open(&path, 100).unwrap();
        assert_eq!(s.due("exec-hook", 5_000).unwrap(), [(a, 1)]);
        assert_eq!(s.attempts(a, "exec-hook").unwrap(), 1);
        assert_eq!(
            s.outbox_counts().unwrap(),
            [
                OutboxCounts {
                    destination: "alertmanager".into(),
                    pending: 1,
                    failed: 0
                },
                OutboxCounts {
                    destination: "exec-hook".into(),
                    pending: 1,
                    failed: 1
                },
            ]
        );
        s.delivered(a, "exec-hook").unwrap();
        assert_eq!(s.due("exec-hook", u64::MAX >> 2).unwrap(), []);
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn incident(n: u32) -> Incident {
        Incident {
            id: None,
            at_unix_ms: 1_700_000_000_000 + u64::from(n),
            kind: Kind::SyscallStall,
            class: "stall".into(),
            summary: format!("stall {n}"),
            host: "h".into(),
            monitored: true,
            stopped_heartbeat: n == 1,
            pid: Some(10),
            tid: Some(10 + n),
            comm: Some("svc".into()),
            report: None,
            stall: None,
            signal: None,
            gates_closed: Vec::new(),
            previous_boot: None,
        }
    }

    #[test]
    fn incidents_survive_reopening_and_the_store_stays_bounded() {
        let dir = std::env::temp_dir().join(format!("wd-store-test-{}", std::process::id()));
        let path = dir.join("incidents.db");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = Store::open(&path, 3).unwrap();
            for n in 1..=5 {
                let mut inc = incident(n);
                assert_eq!(s.insert(&mut inc).unwrap(), i64::from(n));
                assert_eq!(inc.id, Some(i64::from(n)));
            }
        }
        let s = Store::open(&path, 3).unwrap();
        let list = s.list(10).unwrap();
        assert_eq!(list.iter().map(|i| i.id).collect::<Vec<_>>(), vec![5, 4, 3]);
        assert_eq!(list[0].summary, "stall 5");
        let got = s.get(4).unwrap().unwrap();
        assert_eq!(got.tid, Some(14));
        assert_eq!(got.id, Some(4));
        assert!(s.get(1).unwrap().is_none(), "oldest was dropped");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_unwritable_store_is_named() {
        let err = Store::open(Path::new("/proc/watchdog/incidents.db"), 10)
            .err()
            .unwrap();
        assert!(
            err.to_string()
                .starts_with("incident store /proc/watchdog/incidents.db"),
            "{err}"
        );
    }

    #[test]
    fn a_store_deleted_under_the_daemon_is_created_again_and_keeps_storing() {
        let dir = std::env::temp_dir().join(format!("wd-store-gone-{}", std::process::id()));
        let path = dir.join("incidents.db");
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Store::open(&path, 10).unwrap();
        s.insert(&mut incident(1)).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(s.reopen_if_gone().unwrap(), "the deletion is noticed");
        assert!(!s.reopen_if_gone().unwrap(), "once");
        std::fs::remove_file(&path).unwrap();
        s.insert(&mut incident(2)).unwrap();
        // What was stored after the deletion is in the file at the path.
        let again = Store::open(&path, 10).unwrap();
        let list = again.list(10).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].summary, "stall 2");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_latch_survives_reopening_until_cleared() {
        let dir = std::env::temp_dir().join(format!("wd-store-latch-{}", std::process::id()));
        let path = dir.join("incidents.db");
        let _ = std::fs::remove_dir_all(&dir);
        {
            let mut s = Store::open(&path, 10).unwrap();
            assert_eq!(s.latch().unwrap(), None);
            s.set_latch("thread 7 stalled", 1_000).unwrap();
        }
        let mut s = Store::open(&path, 10).unwrap();
        assert_eq!(s.latch().unwrap(), Some(("thread 7 stalled".into(), 1_000)));
        s.clear_latch().unwrap();
        assert_eq!(Store::open(&path, 10).unwrap().latch().unwrap(), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_incarnation_is_kept_for_the_next_start() {
        let dir = std::env::temp_dir().join(format!("wd-store-inc-{}", std::process::id()));
        let path = dir.join("incidents.db");
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = Store::open(&path, 10).unwrap();
        assert_eq!(
            s.next_incarnation(|last| last.map_or(1_000, |l| l + 1))
                .unwrap(),
            1_000
        );
        drop(s);
        let mut s = Store::open(&path, 10).unwrap();
        assert_eq!(
            s.next_incarnation(|last| last.map_or(1_000, |l| l + 1))
                .unwrap(),
            1_001
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
