//! The store: SQLite (bundled) in WAL mode, schema versioned by `PRAGMA user_version`.
//!
//! All SQL lives here. Callers run a closure inside one transaction (`Store::write`), so a check and the
//! change it guards are atomic. Operations are short and the API is not a hot path, so a mutex around one
//! connection is enough; media never touches the store.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use rusqlite::{params, Connection, OptionalExtension, Row};

pub mod dialin;
pub mod dialogs;
pub mod direct;
pub mod links;
pub mod push;

/// Schema migrations, applied in order; `user_version` records how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    display_name  TEXT NOT NULL,
    token_hash    TEXT NOT NULL UNIQUE,
    created_at    INTEGER NOT NULL
);
CREATE TABLE rooms (
    id                  INTEGER PRIMARY KEY,
    token               TEXT NOT NULL UNIQUE,
    name                TEXT NOT NULL,
    room_type           INTEGER NOT NULL,
    read_only           INTEGER NOT NULL DEFAULT 0,
    lobby_state         INTEGER NOT NULL DEFAULT 0,
    recording_consent   INTEGER NOT NULL DEFAULT 0,
    default_permissions INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL
);
CREATE TABLE attendees (
    id               INTEGER PRIMARY KEY,
    room_id          INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    actor_type       TEXT NOT NULL,
    actor_id         TEXT NOT NULL,
    display_name     TEXT NOT NULL,
    participant_type INTEGER NOT NULL,
    permissions      INTEGER NOT NULL DEFAULT 0,
    phone_number     TEXT,
    call_id          TEXT,
    call_status      TEXT,
    UNIQUE (room_id, actor_type, actor_id)
);
CREATE TABLE sessions (
    id          TEXT PRIMARY KEY,
    attendee_id INTEGER NOT NULL REFERENCES attendees(id) ON DELETE CASCADE,
    in_call     INTEGER NOT NULL DEFAULT 0,
    last_ping   INTEGER NOT NULL,
    joined_at   INTEGER NOT NULL
);
CREATE INDEX sessions_attendee ON sessions(attendee_id);
CREATE TABLE call_records (
    id               INTEGER PRIMARY KEY,
    room_id          INTEGER NOT NULL REFERENCES rooms(id) ON DELETE CASCADE,
    kind             TEXT NOT NULL,
    attendee_id      INTEGER,
    number           TEXT,
    trunk            TEXT,
    call_id          TEXT,
    started_at       INTEGER NOT NULL,
    answered_at      INTEGER,
    ended_at         INTEGER,
    billable_seconds INTEGER,
    status           TEXT NOT NULL,
    cause            TEXT,
    sip_code         INTEGER
);
CREATE INDEX call_records_room ON call_records(room_id, started_at);
"#,
    dialin::MIGRATION,
    dialogs::MIGRATION,
    links::MIGRATION,
    direct::MIGRATION,
    push::MIGRATION,
];

#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(#[from] rusqlite::Error);

pub type StoreResult<T> = Result<T, StoreError>;

pub struct Store {
    conn: Mutex<Connection>,
}

#[derive(Debug, Clone)]
pub struct UserRow {
    pub id: String,
    pub display_name: String,
}

#[derive(Debug, Clone)]
pub struct RoomRow {
    pub id: i64,
    pub token: String,
    pub name: String,
    pub room_type: i64,
    pub read_only: bool,
    pub lobby_state: i64,
    pub recording_consent: i64,
    pub default_permissions: i64,
}

#[derive(Debug, Clone)]
pub struct AttendeeRow {
    pub id: i64,
    pub room_id: i64,
    pub actor_type: String,
    pub actor_id: String,
    pub display_name: String,
    pub participant_type: i64,
    pub permissions: i64,
    pub phone_number: Option<String>,
    pub call_id: Option<String>,
    pub call_status: Option<String>,
}

#[derive(Debug, Clone)]
pub struct SessionRow {
    pub id: String,
    pub attendee_id: i64,
    pub in_call: i64,
    pub last_ping: i64,
}

#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    pub id: i64,
    pub kind: String,
    pub attendee_id: Option<i64>,
    pub number: Option<String>,
    pub trunk: Option<String>,
    pub call_id: Option<String>,
    pub started_at: i64,
    pub answered_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub billable_seconds: Option<i64>,
    pub status: String,
    pub cause: Option<String>,
    pub sip_code: Option<i64>,
}

/// What `Store::open` closed out because the previous run ended without doing so.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    pub sessions: usize,
    pub call_records: usize,
}

impl Store {
    pub fn open(path: &Path) -> StoreResult<Store> {
        let conn = Connection::open(path)?;
        Store::init(conn)
    }

    pub fn open_in_memory() -> StoreResult<Store> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> StoreResult<Store> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let store = Store {
            conn: Mutex::new(conn),
        };
        store.migrate()?;
        Ok(store)
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (the transaction rolls back).
        crate::sync::lock(&self.conn)
    }

    fn migrate(&self) -> StoreResult<()> {
        let mut conn = self.lock();
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        let applied = usize::try_from(version).unwrap_or(0);
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
            let tx = conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", index as i64 + 1)?;
            tx.commit()?;
            tracing::info!(version = index + 1, "store schema migrated");
        }
        Ok(())
    }

    /// Runs `f` in one transaction, committed when it returns `Ok`.
    pub fn write<T, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Tx) -> Result<T, E>,
    ) -> Result<T, E> {
        let mut conn = self.lock();
        let tx = conn.transaction().map_err(StoreError)?;
        let result = f(&Tx(&tx))?;
        tx.commit().map_err(StoreError)?;
        Ok(result)
    }

    /// Closes out what a previous run left open: its sessions (and so their in-call state) and any
    /// call record without an end.
    pub fn recover(&self, now: i64) -> StoreResult<Recovery> {
        self.write(|tx| {
            let sessions = tx.0.execute("DELETE FROM sessions", [])?;
            let call_records = tx.0.execute(
                "UPDATE call_records SET ended_at = ?1,
                    billable_seconds = CASE WHEN answered_at IS NULL THEN 0 ELSE ?1 - answered_at END,
                    status = CASE WHEN answered_at IS NULL AND kind != 'room' THEN 'rejected' ELSE 'cleared' END,
                    cause = 'restart'
                 WHERE ended_at IS NULL",
                [now],
            )?;
            tx.0.execute(
                "UPDATE attendees SET call_status = 'cleared'
                 WHERE call_status IS NOT NULL AND call_status NOT IN ('cleared', 'rejected')",
                [],
            )?;
            Ok(Recovery {
                sessions,
                call_records,
            })
        })
    }
}

/// One open transaction; every query of the service is a method here.
pub struct Tx<'a>(&'a rusqlite::Transaction<'a>);

fn room_from_row(r: &Row) -> rusqlite::Result<RoomRow> {
    Ok(RoomRow {
        id: r.get(0)?,
        token: r.get(1)?,
        name: r.get(2)?,
        room_type: r.get(3)?,
        read_only: r.get(4)?,
        lobby_state: r.get(5)?,
        recording_consent: r.get(6)?,
        default_permissions: r.get(7)?,
    })
}

const ROOM_COLUMNS: &str =
    "id, token, name, room_type, read_only, lobby_state, recording_consent, default_permissions";

fn attendee_from_row(r: &Row) -> rusqlite::Result<AttendeeRow> {
    Ok(AttendeeRow {
        id: r.get(0)?,
        room_id: r.get(1)?,
        actor_type: r.get(2)?,
        actor_id: r.get(3)?,
        display_name: r.get(4)?,
        participant_type: r.get(5)?,
        permissions: r.get(6)?,
        phone_number: r.get(7)?,
        call_id: r.get(8)?,
        call_status: r.get(9)?,
    })
}

const ATTENDEE_COLUMNS: &str =
    "id, room_id, actor_type, actor_id, display_name, participant_type, \
     permissions, phone_number, call_id, call_status";

fn session_from_row(r: &Row) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        attendee_id: r.get(1)?,
        in_call: r.get(2)?,
        last_ping: r.get(3)?,
    })
}

const SESSION_COLUMNS: &str = "s.id, s.attendee_id, s.in_call, s.last_ping";

fn call_record_from_row(r: &Row) -> rusqlite::Result<CallRecord> {
    Ok(CallRecord {
        id: r.get(0)?,
        kind: r.get(1)?,
        attendee_id: r.get(2)?,
        number: r.get(3)?,
        trunk: r.get(4)?,
        call_id: r.get(5)?,
        started_at: r.get(6)?,
        answered_at: r.get(7)?,
        ended_at: r.get(8)?,
        billable_seconds: r.get(9)?,
        status: r.get(10)?,
        cause: r.get(11)?,
        sip_code: r.get(12)?,
    })
}

const CALL_RECORD_COLUMNS: &str = "id, kind, attendee_id, number, trunk, call_id, started_at, \
     answered_at, ended_at, billable_seconds, status, cause, sip_code";

impl Tx<'_> {
    // Users.

    pub fn user_by_token_hash(&self, hash: &str) -> StoreResult<Option<UserRow>> {
        Ok(self
            .0
            .query_row(
                "SELECT id, display_name FROM users WHERE token_hash = ?1",
                [hash],
                |r| {
                    Ok(UserRow {
                        id: r.get(0)?,
                        display_name: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn user(&self, id: &str) -> StoreResult<Option<UserRow>> {
        Ok(self
            .0
            .query_row(
                "SELECT id, display_name FROM users WHERE id = ?1",
                [id],
                |r| {
                    Ok(UserRow {
                        id: r.get(0)?,
                        display_name: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    pub fn users(&self) -> StoreResult<Vec<UserRow>> {
        let mut stmt = self
            .0
            .prepare("SELECT id, display_name FROM users ORDER BY id")?;
        let rows = stmt.query_map([], |r| {
            Ok(UserRow {
                id: r.get(0)?,
                display_name: r.get(1)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Inserts the user, or replaces the name and token of an existing one. Returns whether it was new.
    /// Removes a user and so revokes its token; its room memberships stay (Talk keeps them too).
    /// Returns whether the user existed.
    pub fn delete_user(&self, id: &str) -> StoreResult<bool> {
        Ok(self.0.execute("DELETE FROM users WHERE id = ?1", [id])? > 0)
    }

    pub fn upsert_user(
        &self,
        id: &str,
        display_name: &str,
        token_hash: &str,
        now: i64,
    ) -> StoreResult<bool> {
        let existed = self.user(id)?.is_some();
        self.0.execute(
            "INSERT INTO users (id, display_name, token_hash, created_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(id) DO UPDATE SET display_name = excluded.display_name,
                                           token_hash = excluded.token_hash",
            params![id, display_name, token_hash, now],
        )?;
        Ok(!existed)
    }

    // Rooms.

    pub fn insert_room(
        &self,
        token: &str,
        name: &str,
        room_type: i64,
        now: i64,
    ) -> StoreResult<i64> {
        self.0.execute(
            "INSERT INTO rooms (token, name, room_type, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![token, name, room_type, now],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    pub fn room_by_token(&self, token: &str) -> StoreResult<Option<RoomRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {ROOM_COLUMNS} FROM rooms WHERE token = ?1"),
                [token],
                room_from_row,
            )
            .optional()?)
    }

    pub fn room_count(&self) -> StoreResult<i64> {
        Ok(self
            .0
            .query_row("SELECT COUNT(*) FROM rooms", [], |r| r.get(0))?)
    }

    /// Rooms where the user (or guest) is an attendee, oldest first.
    pub fn rooms_of_user(&self, actor_type: &str, user_id: &str) -> StoreResult<Vec<RoomRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {} FROM rooms r JOIN attendees a ON a.room_id = r.id
             WHERE a.actor_type = ?2 AND a.actor_id = ?1 ORDER BY r.id",
            ROOM_COLUMNS
                .split(", ")
                .map(|c| format!("r.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))?;
        let rows = stmt.query_map([user_id, actor_type], room_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_room_read_only(&self, room_id: i64, read_only: bool) -> StoreResult<()> {
        self.0.execute(
            "UPDATE rooms SET read_only = ?2 WHERE id = ?1",
            params![room_id, read_only],
        )?;
        Ok(())
    }

    pub fn set_room_lobby(&self, room_id: i64, state: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE rooms SET lobby_state = ?2 WHERE id = ?1",
            params![room_id, state],
        )?;
        Ok(())
    }

    pub fn set_room_recording_consent(&self, room_id: i64, value: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE rooms SET recording_consent = ?2 WHERE id = ?1",
            params![room_id, value],
        )?;
        Ok(())
    }

    pub fn set_room_default_permissions(&self, room_id: i64, value: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE rooms SET default_permissions = ?2 WHERE id = ?1",
            params![room_id, value],
        )?;
        Ok(())
    }

    // Attendees.

    #[allow(clippy::too_many_arguments)]
    pub fn insert_attendee(
        &self,
        room_id: i64,
        actor_type: &str,
        actor_id: &str,
        display_name: &str,
        participant_type: i64,
        phone_number: Option<&str>,
    ) -> StoreResult<i64> {
        self.0.execute(
            "INSERT INTO attendees (room_id, actor_type, actor_id, display_name, participant_type, phone_number)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![room_id, actor_type, actor_id, display_name, participant_type, phone_number],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    pub fn attendee(&self, room_id: i64, attendee_id: i64) -> StoreResult<Option<AttendeeRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {ATTENDEE_COLUMNS} FROM attendees WHERE room_id = ?1 AND id = ?2"),
                [room_id, attendee_id],
                attendee_from_row,
            )
            .optional()?)
    }

    pub fn attendee_by_actor(
        &self,
        room_id: i64,
        actor_type: &str,
        actor_id: &str,
    ) -> StoreResult<Option<AttendeeRow>> {
        Ok(self
            .0
            .query_row(
                &format!(
                    "SELECT {ATTENDEE_COLUMNS} FROM attendees
                     WHERE room_id = ?1 AND actor_type = ?2 AND actor_id = ?3"
                ),
                params![room_id, actor_type, actor_id],
                attendee_from_row,
            )
            .optional()?)
    }

    pub fn attendees(&self, room_id: i64) -> StoreResult<Vec<AttendeeRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {ATTENDEE_COLUMNS} FROM attendees WHERE room_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([room_id], attendee_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn delete_attendee(&self, attendee_id: i64) -> StoreResult<()> {
        self.0
            .execute("DELETE FROM attendees WHERE id = ?1", [attendee_id])?;
        Ok(())
    }

    pub fn set_participant_type(&self, attendee_id: i64, participant_type: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE attendees SET participant_type = ?2 WHERE id = ?1",
            [attendee_id, participant_type],
        )?;
        Ok(())
    }

    pub fn set_attendee_permissions(&self, attendee_id: i64, permissions: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE attendees SET permissions = ?2 WHERE id = ?1",
            [attendee_id, permissions],
        )?;
        Ok(())
    }

    pub fn set_attendee_call(
        &self,
        attendee_id: i64,
        call_id: Option<&str>,
        call_status: Option<&str>,
    ) -> StoreResult<()> {
        self.0.execute(
            "UPDATE attendees SET call_id = ?2, call_status = ?3 WHERE id = ?1",
            params![attendee_id, call_id, call_status],
        )?;
        Ok(())
    }

    // Sessions.

    pub fn insert_session(&self, id: &str, attendee_id: i64, now: i64) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO sessions (id, attendee_id, in_call, last_ping, joined_at) VALUES (?1, ?2, 0, ?3, ?3)",
            params![id, attendee_id, now],
        )?;
        Ok(())
    }

    /// Whether user `user_id` has a session in any room's call.
    pub fn user_in_call(&self, user_id: &str) -> StoreResult<bool> {
        Ok(self.0.query_row(
            "SELECT EXISTS(SELECT 1 FROM sessions s JOIN attendees a ON a.id = s.attendee_id
             WHERE a.actor_type = 'users' AND a.actor_id = ?1 AND s.in_call > 0)",
            [user_id],
            |r| r.get(0),
        )?)
    }

    pub fn sessions_of_attendee(&self, attendee_id: i64) -> StoreResult<Vec<SessionRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.attendee_id = ?1 ORDER BY s.joined_at, s.id"
        ))?;
        let rows = stmt.query_map([attendee_id], session_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn sessions_of_room(&self, room_id: i64) -> StoreResult<Vec<SessionRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {SESSION_COLUMNS} FROM sessions s JOIN attendees a ON a.id = s.attendee_id
             WHERE a.room_id = ?1 ORDER BY s.joined_at, s.id"
        ))?;
        let rows = stmt.query_map([room_id], session_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_session_in_call(&self, id: &str, in_call: i64, now: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE sessions SET in_call = ?2, last_ping = ?3 WHERE id = ?1",
            params![id, in_call, now],
        )?;
        Ok(())
    }

    pub fn delete_session(&self, id: &str) -> StoreResult<()> {
        self.0.execute("DELETE FROM sessions WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn participants_in_call(&self) -> StoreResult<i64> {
        Ok(self.0.query_row(
            "SELECT COUNT(*) FROM sessions WHERE in_call != 0",
            [],
            |r| r.get(0),
        )?)
    }

    // Call records.

    pub fn open_room_call_record(&self, room_id: i64) -> StoreResult<Option<i64>> {
        Ok(self
            .0
            .query_row(
                "SELECT id FROM call_records WHERE room_id = ?1 AND kind = 'room' AND ended_at IS NULL",
                [room_id],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub fn insert_room_call_record(&self, room_id: i64, now: i64) -> StoreResult<i64> {
        self.0.execute(
            "INSERT INTO call_records (room_id, kind, started_at, answered_at, status)
             VALUES (?1, 'room', ?2, ?2, 'connected')",
            params![room_id, now],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    pub fn end_call_record(&self, id: i64, now: i64, status: &str, cause: &str) -> StoreResult<()> {
        self.0.execute(
            "UPDATE call_records SET ended_at = ?2, status = ?3, cause = ?4,
                billable_seconds = CASE WHEN answered_at IS NULL THEN 0 ELSE ?2 - answered_at END
             WHERE id = ?1 AND ended_at IS NULL",
            params![id, now, status, cause],
        )?;
        Ok(())
    }

    pub fn call_records(&self, room_id: i64) -> StoreResult<Vec<CallRecord>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {CALL_RECORD_COLUMNS} FROM call_records WHERE room_id = ?1 ORDER BY id"
        ))?;
        let rows = stmt.query_map([room_id], call_record_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Opens the record of one phone leg (`kind` 'dialout' or 'dialin'), status `accepted`.
    pub fn insert_phone_call_record(&self, leg: &PhoneCallRecord, now: i64) -> StoreResult<i64> {
        self.0.execute(
            "INSERT INTO call_records (room_id, kind, attendee_id, number, trunk, call_id, started_at, status)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'accepted')",
            params![leg.room_id, leg.kind, leg.attendee_id, leg.number, leg.trunk, leg.call_id, now],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    /// Notes a phone leg's progress (ringing) or its answer (connected, with the time).
    pub fn update_phone_call_record(
        &self,
        id: i64,
        status: &str,
        answered_at: Option<i64>,
    ) -> StoreResult<()> {
        self.0.execute(
            "UPDATE call_records SET status = ?2, answered_at = COALESCE(?3, answered_at)
             WHERE id = ?1 AND ended_at IS NULL",
            params![id, status, answered_at],
        )?;
        Ok(())
    }

    /// Closes a phone leg's record with its final status, cause and SIP code.
    pub fn end_phone_call_record(
        &self,
        id: i64,
        now: i64,
        status: &str,
        cause: &str,
        sip_code: Option<u16>,
    ) -> StoreResult<()> {
        self.end_call_record(id, now, status, cause)?;
        self.0.execute(
            "UPDATE call_records SET sip_code = ?2 WHERE id = ?1",
            params![id, sip_code],
        )?;
        Ok(())
    }
}

/// What identifies a phone leg's call record.
#[derive(Debug, Clone)]
pub struct PhoneCallRecord {
    pub room_id: i64,
    pub kind: &'static str,
    pub attendee_id: i64,
    pub number: String,
    pub trunk: String,
    pub call_id: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_idempotent_and_data_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.sqlite");
        {
            let store = Store::open(&path).expect("open");
            store
                .write(|tx| {
                    let room = tx.insert_room("abcdefgh", "Room", 2, 1)?;
                    let attendee = tx.insert_attendee(room, "users", "alice", "Alice", 1, None)?;
                    tx.insert_session("s1", attendee, 1)?;
                    tx.set_session_in_call("s1", 3, 2)?;
                    tx.insert_room_call_record(room, 2)?;
                    Ok::<_, StoreError>(())
                })
                .expect("write");
        }
        let store = Store::open(&path).expect("reopen");
        let recovery = store.recover(10).expect("recover");
        assert_eq!(
            recovery,
            Recovery {
                sessions: 1,
                call_records: 1
            }
        );
        store
            .write(|tx| {
                let room = tx.room_by_token("abcdefgh")?.expect("room survives");
                assert_eq!(tx.attendees(room.id)?.len(), 1);
                assert!(tx.sessions_of_room(room.id)?.is_empty());
                let records = tx.call_records(room.id)?;
                assert_eq!(records[0].ended_at, Some(10));
                assert_eq!(records[0].billable_seconds, Some(8));
                assert_eq!(records[0].cause.as_deref(), Some("restart"));
                Ok::<_, StoreError>(())
            })
            .expect("read");
    }

    #[test]
    fn failed_closure_rolls_back() {
        let store = Store::open_in_memory().expect("open");
        let result: Result<(), StoreError> = store.write(|tx| {
            tx.insert_room("abcdefgh", "Room", 2, 1)?;
            tx.insert_room("abcdefgh", "Dup", 2, 1)?;
            Ok(())
        });
        assert!(result.is_err());
        store
            .write(|tx| {
                assert_eq!(tx.room_count()?, 0);
                Ok::<_, StoreError>(())
            })
            .expect("read");
    }
}
