//! Push registrations, the gateway's VAPID key and voice calls (schema migration 6).

use rusqlite::{params, OptionalExtension, Row};

use super::{StoreResult, Tx};

/// Migration 6. A registration's `value` is the device token (APNs, FCM), the subscription's
/// endpoint URL (Web Push, UnifiedPush); `p256dh`/`auth` are its RFC 8291 keys (base64url).
/// A Web Push or UnifiedPush registration is used once `activated`.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE push_registrations (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    value            TEXT NOT NULL,
    p256dh           TEXT,
    auth             TEXT,
    app_name         TEXT NOT NULL,
    device_id        TEXT NOT NULL,
    voip             INTEGER NOT NULL,
    activation_token TEXT NOT NULL,
    activated        INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    UNIQUE (user_id, kind, value)
);
CREATE INDEX push_registrations_user ON push_registrations (user_id);
CREATE TABLE settings (
    name   TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);
CREATE TABLE voice_calls (
    id          TEXT PRIMARY KEY,
    room_token  TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    recipients  TEXT NOT NULL,
    status      TEXT NOT NULL,
    reason      TEXT,
    payload     TEXT NOT NULL,
    deliveries  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    ended_at    INTEGER
);
"#;

/// The name of the VAPID private key in `settings`.
pub const VAPID_KEY: &str = "vapid_private_key";

/// One registered device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushRow {
    pub id: String,
    pub user_id: String,
    /// `apn`, `gcm`, `webpush` or `unifiedpush`.
    pub kind: String,
    pub value: String,
    pub p256dh: Option<String>,
    pub auth: Option<String>,
    pub app_name: String,
    pub device_id: String,
    pub voip: bool,
    pub activation_token: String,
    pub activated: bool,
}

/// A voice call as stored; `recipients`, `payload` and `deliveries` are JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VoiceCallRow {
    pub id: String,
    pub room_token: String,
    pub sender_id: String,
    pub recipients: String,
    pub status: String,
    pub reason: Option<String>,
    pub payload: String,
    pub deliveries: String,
    pub created_at: i64,
    pub ended_at: Option<i64>,
}

fn push_from_row(r: &Row) -> rusqlite::Result<PushRow> {
    Ok(PushRow {
        id: r.get("id")?,
        user_id: r.get("user_id")?,
        kind: r.get("kind")?,
        value: r.get("value")?,
        p256dh: r.get("p256dh")?,
        auth: r.get("auth")?,
        app_name: r.get("app_name")?,
        device_id: r.get("device_id")?,
        voip: r.get("voip")?,
        activation_token: r.get("activation_token")?,
        activated: r.get("activated")?,
    })
}

fn call_from_row(r: &Row) -> rusqlite::Result<VoiceCallRow> {
    Ok(VoiceCallRow {
        id: r.get("id")?,
        room_token: r.get("room_token")?,
        sender_id: r.get("sender_id")?,
        recipients: r.get("recipients")?,
        status: r.get("status")?,
        reason: r.get("reason")?,
        payload: r.get("payload")?,
        deliveries: r.get("deliveries")?,
        created_at: r.get("created_at")?,
        ended_at: r.get("ended_at")?,
    })
}

impl Tx<'_> {
    pub fn setting(&self, name: &str) -> StoreResult<Option<String>> {
        Ok(self
            .0
            .query_row("SELECT value FROM settings WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()?)
    }

    pub fn set_setting(&self, name: &str, value: &str) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO settings (name, value) VALUES (?1, ?2)
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            params![name, value],
        )?;
        Ok(())
    }

    /// Registers a device; the same user, type and value again replaces the earlier registration
    /// (a re-subscription must prove itself again). Returns the registration as stored.
    pub fn upsert_push(&self, row: &PushRow, now: i64) -> StoreResult<PushRow> {
        self.0.execute(
            "DELETE FROM push_registrations WHERE user_id = ?1 AND kind = ?2 AND value = ?3",
            params![row.user_id, row.kind, row.value],
        )?;
        self.0.execute(
            "INSERT INTO push_registrations (id, user_id, kind, value, p256dh, auth, app_name,
             device_id, voip, activation_token, activated, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            params![
                row.id,
                row.user_id,
                row.kind,
                row.value,
                row.p256dh,
                row.auth,
                row.app_name,
                row.device_id,
                row.voip,
                row.activation_token,
                row.activated,
                now
            ],
        )?;
        Ok(row.clone())
    }

    pub fn push_registration(&self, id: &str) -> StoreResult<Option<PushRow>> {
        Ok(self
            .0
            .query_row(
                "SELECT * FROM push_registrations WHERE id = ?1",
                [id],
                push_from_row,
            )
            .optional()?)
    }

    /// A user's registrations, oldest first.
    pub fn push_registrations(&self, user_id: &str) -> StoreResult<Vec<PushRow>> {
        let mut stmt = self.0.prepare(
            "SELECT * FROM push_registrations WHERE user_id = ?1 ORDER BY created_at, rowid",
        )?;
        let rows = stmt.query_map([user_id], push_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn activate_push(&self, id: &str) -> StoreResult<()> {
        self.0.execute(
            "UPDATE push_registrations SET activated = 1 WHERE id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// Removes a user's registration named by its id or its value; whether there was one.
    pub fn delete_push(&self, user_id: &str, token: &str) -> StoreResult<bool> {
        Ok(self.0.execute(
            "DELETE FROM push_registrations WHERE user_id = ?1 AND (id = ?2 OR value = ?2)",
            params![user_id, token],
        )? > 0)
    }

    /// Removes a registration its push service says is gone.
    pub fn drop_push(&self, id: &str) -> StoreResult<()> {
        self.0
            .execute("DELETE FROM push_registrations WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn insert_voice_call(&self, row: &VoiceCallRow) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO voice_calls (id, room_token, sender_id, recipients, status, reason,
             payload, deliveries, created_at, ended_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                row.id,
                row.room_token,
                row.sender_id,
                row.recipients,
                row.status,
                row.reason,
                row.payload,
                row.deliveries,
                row.created_at,
                row.ended_at
            ],
        )?;
        Ok(())
    }

    pub fn voice_call(&self, id: &str) -> StoreResult<Option<VoiceCallRow>> {
        Ok(self
            .0
            .query_row(
                "SELECT * FROM voice_calls WHERE id = ?1",
                [id],
                call_from_row,
            )
            .optional()?)
    }

    /// Moves a call to `status`; `ended` marks it over.
    pub fn set_voice_call_status(
        &self,
        id: &str,
        status: &str,
        reason: Option<&str>,
        ended: Option<i64>,
    ) -> StoreResult<()> {
        self.0.execute(
            "UPDATE voice_calls SET status = ?2, reason = ?3, ended_at = COALESCE(?4, ended_at)
             WHERE id = ?1",
            params![id, status, reason, ended],
        )?;
        Ok(())
    }

    pub fn set_voice_call_deliveries(&self, id: &str, deliveries: &str) -> StoreResult<()> {
        self.0.execute(
            "UPDATE voice_calls SET deliveries = ?2 WHERE id = ?1",
            params![id, deliveries],
        )?;
        Ok(())
    }

    /// Calls a previous run left ringing or talking are over.
    pub fn close_voice_calls(&self, now: i64) -> StoreResult<usize> {
        Ok(self.0.execute(
            "UPDATE voice_calls SET status = CASE status WHEN 'calling' THEN 'missed' ELSE 'ended' END,
             reason = 'restart', ended_at = ?1
             WHERE status IN ('calling', 'accepted')",
            [now],
        )?)
    }
}
