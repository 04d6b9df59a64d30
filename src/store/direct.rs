//! The call log of direct calls (schema migration 5): one row per user per call, written when the
//! call ends for them.

use rusqlite::{params, Row};

use super::{StoreResult, Tx};

/// Migration 5. `user_list` is a JSON array of the call's users; times are milliseconds.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE direct_call_log (
    id             INTEGER PRIMARY KEY,
    user_id        TEXT NOT NULL,
    room_id        TEXT NOT NULL,
    call_mode      TEXT NOT NULL,
    call_state     TEXT NOT NULL,
    call_type      TEXT NOT NULL,
    call_time      INTEGER NOT NULL,
    start_time     INTEGER,
    end_time       INTEGER NOT NULL,
    from_user      TEXT NOT NULL,
    to_user        TEXT NOT NULL,
    user_list      TEXT NOT NULL,
    reason         TEXT
);
CREATE INDEX direct_call_log_user ON direct_call_log (user_id, call_time);
"#;

/// One entry of a user's call log (the seed's call log fields).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallLogEntry {
    pub room_id: String,
    pub call_mode: String,
    /// `outgoing`, `incoming` (answered) or `missed` (not answered, declined or busy).
    pub call_state: String,
    pub call_type: String,
    pub call_time: i64,
    pub start_time: Option<i64>,
    pub end_time: i64,
    pub from_user: String,
    pub to_user: String,
    pub user_list: Vec<String>,
    /// `open` while the call goes on; a log entry is written when it is over.
    pub session_status: String,
    pub reason: Option<String>,
}

fn from_row(r: &Row) -> rusqlite::Result<CallLogEntry> {
    let users: String = r.get("user_list")?;
    Ok(CallLogEntry {
        room_id: r.get("room_id")?,
        call_mode: r.get("call_mode")?,
        call_state: r.get("call_state")?,
        call_type: r.get("call_type")?,
        call_time: r.get("call_time")?,
        start_time: r.get("start_time")?,
        end_time: r.get("end_time")?,
        from_user: r.get("from_user")?,
        to_user: r.get("to_user")?,
        // A row this code wrote always holds a JSON list; anything else reads as no users.
        user_list: serde_json::from_str(&users).unwrap_or_default(),
        session_status: "closed".to_string(),
        reason: r.get("reason")?,
    })
}

impl Tx<'_> {
    pub fn insert_call_log(&self, user_id: &str, entry: &CallLogEntry) -> StoreResult<()> {
        let users = serde_json::to_string(&entry.user_list).unwrap_or_else(|_| "[]".into());
        self.0.execute(
            "INSERT INTO direct_call_log (user_id, room_id, call_mode, call_state, call_type,
             call_time, start_time, end_time, from_user, to_user, user_list, reason)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                user_id,
                entry.room_id,
                entry.call_mode,
                entry.call_state,
                entry.call_type,
                entry.call_time,
                entry.start_time,
                entry.end_time,
                entry.from_user,
                entry.to_user,
                users,
                entry.reason,
            ],
        )?;
        Ok(())
    }

    /// A page of a user's call log, newest first, and how many entries there are in all.
    pub fn call_log(
        &self,
        user_id: &str,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<CallLogEntry>, i64)> {
        let total: i64 = self.0.query_row(
            "SELECT COUNT(*) FROM direct_call_log WHERE user_id = ?1",
            [user_id],
            |r| r.get(0),
        )?;
        let mut stmt = self.0.prepare(
            "SELECT * FROM direct_call_log WHERE user_id = ?1
             ORDER BY call_time DESC, id DESC LIMIT ?2 OFFSET ?3",
        )?;
        let rows = stmt.query_map(params![user_id, limit, offset], from_row)?;
        Ok((rows.collect::<Result<_, _>>()?, total))
    }
}
