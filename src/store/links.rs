//! Call links (schema migration 4): organizations and their plans, projects, project API tokens,
//! the links themselves with their participants (the meter), guest passes, and the webhook queue.
//!
//! Money is kept in micro-units (millionths of the currency) and link times in milliseconds, so
//! participant-minutes and spend are exact sums.

use rusqlite::{params, OptionalExtension, Row};

use super::{StoreResult, Tx};

/// Migration 4. A project outlives its organization (`organization_id` set to NULL), which the
/// API reports as `organization_not_found`.
pub(super) const MIGRATION: &str = r#"
CREATE TABLE organizations (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    subscribed          INTEGER NOT NULL DEFAULT 1,
    price_micros        INTEGER NOT NULL DEFAULT 0,
    spend_limit_micros  INTEGER,
    one_to_one          INTEGER NOT NULL DEFAULT 1,
    recording           INTEGER NOT NULL DEFAULT 1,
    dialout             INTEGER NOT NULL DEFAULT 1,
    created_at          INTEGER NOT NULL
);
CREATE TABLE projects (
    id                INTEGER PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    organization_id   INTEGER REFERENCES organizations(id) ON DELETE SET NULL,
    enable_recording  INTEGER NOT NULL DEFAULT 0,
    webhook_url       TEXT,
    webhook_secret    TEXT,
    link_lifetime     INTEGER NOT NULL,
    empty_timeout     INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE TABLE project_tokens (
    token_hash  TEXT PRIMARY KEY,
    project_id  INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    created_at  INTEGER NOT NULL
);
CREATE TABLE call_links (
    id             TEXT PRIMARY KEY,
    project_id     INTEGER NOT NULL REFERENCES projects(id) ON DELETE CASCADE,
    room_id        INTEGER NOT NULL UNIQUE REFERENCES rooms(id) ON DELETE CASCADE,
    title          TEXT,
    status         TEXT NOT NULL,
    recording      INTEGER NOT NULL,
    created_ms     INTEGER NOT NULL,
    updated_ms     INTEGER NOT NULL,
    started_ms     INTEGER,
    ended_ms       INTEGER,
    deleted_ms     INTEGER,
    expires_ms     INTEGER NOT NULL,
    empty_since_ms INTEGER
);
CREATE INDEX call_links_project ON call_links(project_id, created_ms);
CREATE TABLE link_participants (
    id          INTEGER PRIMARY KEY,
    link_id     TEXT NOT NULL REFERENCES call_links(id) ON DELETE CASCADE,
    session_id  TEXT NOT NULL,
    username    TEXT NOT NULL,
    joined_ms   INTEGER NOT NULL,
    left_ms     INTEGER
);
CREATE INDEX link_participants_link ON link_participants(link_id, session_id);
CREATE TABLE link_guests (
    token_hash    TEXT PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    link_id       TEXT NOT NULL REFERENCES call_links(id) ON DELETE CASCADE,
    display_name  TEXT NOT NULL,
    created_ms    INTEGER NOT NULL
);
CREATE TABLE webhook_queue (
    id          TEXT PRIMARY KEY,
    project_id  INTEGER NOT NULL,
    url         TEXT NOT NULL,
    secret      TEXT NOT NULL,
    body        TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_ms     INTEGER NOT NULL
);
CREATE INDEX webhook_queue_next ON webhook_queue(next_ms);
CREATE TABLE recordings (
    id           TEXT PRIMARY KEY,
    link_id      TEXT NOT NULL REFERENCES call_links(id) ON DELETE CASCADE,
    path         TEXT NOT NULL,
    started_ms   INTEGER NOT NULL,
    ended_ms     INTEGER NOT NULL,
    duration_ms  INTEGER NOT NULL,
    bytes        INTEGER NOT NULL
);
CREATE INDEX recordings_link ON recordings(link_id, started_ms);
"#;

/// An organization and its subscription (plan).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrgRow {
    pub id: i64,
    pub name: String,
    /// Without a subscription no link can be created (`subscription_not_found`).
    pub subscribed: bool,
    /// Price of one participant-minute, in micro-units.
    pub price_micros: i64,
    /// Monthly spend limit in micro-units; None: no limit.
    pub spend_limit_micros: Option<i64>,
    pub one_to_one: bool,
    pub recording: bool,
    pub dialout: bool,
}

const ORG_COLUMNS: &str =
    "id, name, subscribed, price_micros, spend_limit_micros, one_to_one, recording, dialout";

fn org_from_row(r: &Row) -> rusqlite::Result<OrgRow> {
    Ok(OrgRow {
        id: r.get(0)?,
        name: r.get(1)?,
        subscribed: r.get(2)?,
        price_micros: r.get(3)?,
        spend_limit_micros: r.get(4)?,
        one_to_one: r.get(5)?,
        recording: r.get(6)?,
        dialout: r.get(7)?,
    })
}

/// A project: the owner of API tokens and links.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectRow {
    pub id: i64,
    pub name: String,
    pub organization_id: Option<i64>,
    pub enable_recording: bool,
    pub webhook_url: Option<String>,
    pub webhook_secret: Option<String>,
    /// Seconds a link lives when `expiresAt` is not given.
    pub link_lifetime: i64,
    /// Seconds a started call may stay empty before it ends.
    pub empty_timeout: i64,
}

const PROJECT_COLUMNS: &str = "id, name, organization_id, enable_recording, webhook_url, \
     webhook_secret, link_lifetime, empty_timeout";

fn project_from_row(r: &Row) -> rusqlite::Result<ProjectRow> {
    Ok(ProjectRow {
        id: r.get(0)?,
        name: r.get(1)?,
        organization_id: r.get(2)?,
        enable_recording: r.get(3)?,
        webhook_url: r.get(4)?,
        webhook_secret: r.get(5)?,
        link_lifetime: r.get(6)?,
        empty_timeout: r.get(7)?,
    })
}

/// A call link as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkRow {
    pub id: String,
    pub project_id: i64,
    pub room_id: i64,
    pub room_token: String,
    pub title: Option<String>,
    pub status: String,
    pub recording: bool,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub started_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub deleted_ms: Option<i64>,
    pub expires_ms: i64,
    pub empty_since_ms: Option<i64>,
}

const LINK_COLUMNS: &str = "l.id, l.project_id, l.room_id, r.token, l.title, l.status, \
     l.recording, l.created_ms, l.updated_ms, l.started_ms, l.ended_ms, l.deleted_ms, \
     l.expires_ms, l.empty_since_ms";

fn link_from_row(r: &Row) -> rusqlite::Result<LinkRow> {
    Ok(LinkRow {
        id: r.get(0)?,
        project_id: r.get(1)?,
        room_id: r.get(2)?,
        room_token: r.get(3)?,
        title: r.get(4)?,
        status: r.get(5)?,
        recording: r.get(6)?,
        created_ms: r.get(7)?,
        updated_ms: r.get(8)?,
        started_ms: r.get(9)?,
        ended_ms: r.get(10)?,
        deleted_ms: r.get(11)?,
        expires_ms: r.get(12)?,
        empty_since_ms: r.get(13)?,
    })
}

/// One stay of a session in a link's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParticipantRow {
    pub session_id: String,
    pub username: String,
    pub joined_ms: i64,
    pub left_ms: Option<i64>,
}

/// A guest pass: who it names and which link it opens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestRow {
    pub id: String,
    pub link_id: String,
    pub display_name: String,
}

/// A webhook delivery waiting to be (re)tried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookRow {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub body: String,
    pub attempts: i64,
}

/// A finished recording of a link's call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordingRow {
    pub id: String,
    pub link_id: String,
    pub path: String,
    pub started_ms: i64,
    pub ended_ms: i64,
    pub duration_ms: i64,
    pub bytes: i64,
}

fn recording_from_row(r: &Row) -> rusqlite::Result<RecordingRow> {
    Ok(RecordingRow {
        id: r.get(0)?,
        link_id: r.get(1)?,
        path: r.get(2)?,
        started_ms: r.get(3)?,
        ended_ms: r.get(4)?,
        duration_ms: r.get(5)?,
        bytes: r.get(6)?,
    })
}

const RECORDING_COLUMNS: &str = "id, link_id, path, started_ms, ended_ms, duration_ms, bytes";

/// New settings of an organization; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct OrgChange {
    pub subscribed: Option<bool>,
    pub price_micros: Option<i64>,
    pub spend_limit_micros: Option<Option<i64>>,
    pub one_to_one: Option<bool>,
    pub recording: Option<bool>,
    pub dialout: Option<bool>,
}

/// New settings of a project; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ProjectChange {
    pub organization_id: Option<i64>,
    pub enable_recording: Option<bool>,
    pub webhook_url: Option<Option<String>>,
    pub webhook_secret: Option<Option<String>>,
    pub link_lifetime: Option<i64>,
    pub empty_timeout: Option<i64>,
}

/// A link to insert.
#[derive(Debug, Clone)]
pub struct NewLink<'a> {
    pub id: &'a str,
    pub project_id: i64,
    pub room_id: i64,
    pub title: Option<&'a str>,
    pub recording: bool,
    pub now_ms: i64,
    pub expires_ms: i64,
}

/// Statuses of open links (the ones that still hold budget and may be joined).
const OPEN: &str = "('created', 'active')";

impl Tx<'_> {
    // Organizations.

    pub fn insert_org(&self, name: &str, change: &OrgChange, now: i64) -> StoreResult<i64> {
        self.0.execute(
            "INSERT INTO organizations (name, created_at) VALUES (?1, ?2)",
            params![name, now],
        )?;
        let id = self.0.last_insert_rowid();
        self.update_org(id, change)?;
        Ok(id)
    }

    pub fn update_org(&self, id: i64, c: &OrgChange) -> StoreResult<()> {
        self.0.execute(
            "UPDATE organizations SET
                subscribed = COALESCE(?2, subscribed),
                price_micros = COALESCE(?3, price_micros),
                spend_limit_micros = CASE WHEN ?4 THEN ?5 ELSE spend_limit_micros END,
                one_to_one = COALESCE(?6, one_to_one),
                recording = COALESCE(?7, recording),
                dialout = COALESCE(?8, dialout)
             WHERE id = ?1",
            params![
                id,
                c.subscribed,
                c.price_micros,
                c.spend_limit_micros.is_some(),
                c.spend_limit_micros.flatten(),
                c.one_to_one,
                c.recording,
                c.dialout
            ],
        )?;
        Ok(())
    }

    pub fn org(&self, id: i64) -> StoreResult<Option<OrgRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {ORG_COLUMNS} FROM organizations WHERE id = ?1"),
                [id],
                org_from_row,
            )
            .optional()?)
    }

    pub fn org_by_name(&self, name: &str) -> StoreResult<Option<OrgRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {ORG_COLUMNS} FROM organizations WHERE name = ?1"),
                [name],
                org_from_row,
            )
            .optional()?)
    }

    pub fn orgs(&self) -> StoreResult<Vec<OrgRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {ORG_COLUMNS} FROM organizations ORDER BY name"
        ))?;
        let rows = stmt.query_map([], org_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Removes an organization; its projects stay, without one.
    pub fn delete_org(&self, id: i64) -> StoreResult<bool> {
        Ok(self
            .0
            .execute("DELETE FROM organizations WHERE id = ?1", [id])?
            > 0)
    }

    // Projects.

    pub fn insert_project(
        &self,
        name: &str,
        org_id: i64,
        link_lifetime: i64,
        empty_timeout: i64,
        now: i64,
    ) -> StoreResult<i64> {
        self.0.execute(
            "INSERT INTO projects (name, organization_id, link_lifetime, empty_timeout, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![name, org_id, link_lifetime, empty_timeout, now],
        )?;
        Ok(self.0.last_insert_rowid())
    }

    pub fn update_project(&self, id: i64, c: &ProjectChange) -> StoreResult<()> {
        self.0.execute(
            "UPDATE projects SET
                organization_id = COALESCE(?2, organization_id),
                enable_recording = COALESCE(?3, enable_recording),
                webhook_url = CASE WHEN ?4 THEN ?5 ELSE webhook_url END,
                webhook_secret = CASE WHEN ?6 THEN ?7 ELSE webhook_secret END,
                link_lifetime = COALESCE(?8, link_lifetime),
                empty_timeout = COALESCE(?9, empty_timeout)
             WHERE id = ?1",
            params![
                id,
                c.organization_id,
                c.enable_recording,
                c.webhook_url.is_some(),
                c.webhook_url.clone().flatten(),
                c.webhook_secret.is_some(),
                c.webhook_secret.clone().flatten(),
                c.link_lifetime,
                c.empty_timeout
            ],
        )?;
        Ok(())
    }

    pub fn project(&self, id: i64) -> StoreResult<Option<ProjectRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE id = ?1"),
                [id],
                project_from_row,
            )
            .optional()?)
    }

    pub fn project_by_name(&self, name: &str) -> StoreResult<Option<ProjectRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {PROJECT_COLUMNS} FROM projects WHERE name = ?1"),
                [name],
                project_from_row,
            )
            .optional()?)
    }

    pub fn projects(&self) -> StoreResult<Vec<ProjectRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {PROJECT_COLUMNS} FROM projects ORDER BY name"
        ))?;
        let rows = stmt.query_map([], project_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // Project tokens.

    /// Adds a token (by its hash); an existing hash is moved to this project.
    pub fn insert_project_token(&self, project_id: i64, hash: &str, now: i64) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO project_tokens (token_hash, project_id, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(token_hash) DO UPDATE SET project_id = excluded.project_id",
            params![hash, project_id, now],
        )?;
        Ok(())
    }

    pub fn project_by_token_hash(&self, hash: &str) -> StoreResult<Option<ProjectRow>> {
        let columns = PROJECT_COLUMNS
            .split(", ")
            .map(|c| format!("p.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        Ok(self
            .0
            .query_row(
                &format!(
                    "SELECT {columns} FROM projects p JOIN project_tokens t ON t.project_id = p.id
                     WHERE t.token_hash = ?1"
                ),
                [hash],
                project_from_row,
            )
            .optional()?)
    }

    // Links.

    pub fn insert_link(&self, l: &NewLink) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO call_links (id, project_id, room_id, title, status, recording,
                                     created_ms, updated_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, 'created', ?5, ?6, ?6, ?7)",
            params![
                l.id,
                l.project_id,
                l.room_id,
                l.title,
                l.recording,
                l.now_ms,
                l.expires_ms
            ],
        )?;
        Ok(())
    }

    fn links_where(
        &self,
        condition: &str,
        args: &[&dyn rusqlite::ToSql],
    ) -> StoreResult<Vec<LinkRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {LINK_COLUMNS} FROM call_links l JOIN rooms r ON r.id = l.room_id WHERE {condition}"
        ))?;
        let rows = stmt.query_map(args, link_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn link(&self, id: &str) -> StoreResult<Option<LinkRow>> {
        Ok(self.links_where("l.id = ?1", &[&id])?.into_iter().next())
    }

    pub fn link_of_room(&self, room_id: i64) -> StoreResult<Option<LinkRow>> {
        Ok(self
            .links_where("l.room_id = ?1", &[&room_id])?
            .into_iter()
            .next())
    }

    /// A project's links created in `[from_ms, to_ms)`, newest first, one page.
    pub fn links_of_project(
        &self,
        project_id: i64,
        from_ms: i64,
        to_ms: i64,
        offset: i64,
        limit: i64,
    ) -> StoreResult<(Vec<LinkRow>, i64)> {
        let total = self.0.query_row(
            "SELECT COUNT(*) FROM call_links WHERE project_id = ?1 AND created_ms >= ?2 AND created_ms < ?3",
            params![project_id, from_ms, to_ms],
            |r| r.get(0),
        )?;
        let rows = self.links_where(
            "l.project_id = ?1 AND l.created_ms >= ?2 AND l.created_ms < ?3
             ORDER BY l.created_ms DESC, l.id LIMIT ?4 OFFSET ?5",
            &[&project_id, &from_ms, &to_ms, &limit, &offset],
        )?;
        Ok((rows, total))
    }

    /// Links that are created or active.
    pub fn open_links(&self) -> StoreResult<Vec<LinkRow>> {
        self.links_where(&format!("l.status IN {OPEN} ORDER BY l.created_ms"), &[])
    }

    /// Sets a link's status and the times that come with it (each set once).
    pub fn set_link_status(
        &self,
        id: &str,
        status: &str,
        now_ms: i64,
        started: bool,
        ended: bool,
    ) -> StoreResult<()> {
        self.0.execute(
            "UPDATE call_links SET status = ?2, updated_ms = ?3,
                started_ms = CASE WHEN ?4 THEN COALESCE(started_ms, ?3) ELSE started_ms END,
                ended_ms = CASE WHEN ?5 THEN COALESCE(ended_ms, ?3) ELSE ended_ms END
             WHERE id = ?1",
            params![id, status, now_ms, started, ended],
        )?;
        Ok(())
    }

    pub fn set_link_deleted(&self, id: &str, now_ms: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE call_links SET deleted_ms = COALESCE(deleted_ms, ?2), updated_ms = ?2 WHERE id = ?1",
            params![id, now_ms],
        )?;
        Ok(())
    }

    pub fn set_link_empty_since(&self, id: &str, since_ms: Option<i64>) -> StoreResult<()> {
        self.0.execute(
            "UPDATE call_links SET empty_since_ms = ?2 WHERE id = ?1",
            params![id, since_ms],
        )?;
        Ok(())
    }

    /// An organization's open links with the number of participants in each one's call.
    pub fn open_links_of_org(&self, org_id: i64) -> StoreResult<Vec<(String, i64)>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT l.id, COUNT(lp.id) FROM call_links l JOIN projects p ON p.id = l.project_id
             LEFT JOIN link_participants lp ON lp.link_id = l.id AND lp.left_ms IS NULL
             WHERE p.organization_id = ?1 AND l.status IN {OPEN} AND l.deleted_ms IS NULL
             GROUP BY l.id"
        ))?;
        let rows = stmt.query_map([org_id], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The trunks of an organization's dial-out legs that have not ended.
    pub fn open_dialouts_of_org(&self, org_id: i64) -> StoreResult<Vec<String>> {
        let mut stmt = self.0.prepare(
            "SELECT COALESCE(c.trunk, '') FROM call_records c
             JOIN call_links l ON l.room_id = c.room_id JOIN projects p ON p.id = l.project_id
             WHERE p.organization_id = ?1 AND c.kind = 'dialout' AND c.ended_at IS NULL",
        )?;
        let rows = stmt.query_map([org_id], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // The meter.

    pub fn open_link_participant(&self, link_id: &str, session_id: &str) -> StoreResult<bool> {
        Ok(self
            .0
            .query_row(
                "SELECT 1 FROM link_participants WHERE link_id = ?1 AND session_id = ?2 AND left_ms IS NULL",
                params![link_id, session_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    pub fn insert_link_participant(
        &self,
        link_id: &str,
        session_id: &str,
        username: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO link_participants (link_id, session_id, username, joined_ms) VALUES (?1, ?2, ?3, ?4)",
            params![link_id, session_id, username, now_ms],
        )?;
        Ok(())
    }

    /// Closes a session's open stay; returns whether there was one.
    pub fn close_link_participant(
        &self,
        link_id: &str,
        session_id: &str,
        now_ms: i64,
    ) -> StoreResult<bool> {
        Ok(self.0.execute(
            "UPDATE link_participants SET left_ms = ?3 WHERE link_id = ?1 AND session_id = ?2 AND left_ms IS NULL",
            params![link_id, session_id, now_ms],
        )? > 0)
    }

    /// Closes every open stay of a link (its call ended); returns the sessions closed.
    pub fn close_link_participants(&self, link_id: &str, now_ms: i64) -> StoreResult<Vec<String>> {
        let mut stmt = self.0.prepare(
            "UPDATE link_participants SET left_ms = ?2 WHERE link_id = ?1 AND left_ms IS NULL RETURNING session_id",
        )?;
        let rows = stmt.query_map(params![link_id, now_ms], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Closes the stays a previous run left open, at `now_ms`.
    pub fn close_all_link_participants(&self, now_ms: i64) -> StoreResult<usize> {
        Ok(self.0.execute(
            "UPDATE link_participants SET left_ms = ?1 WHERE left_ms IS NULL",
            [now_ms],
        )?)
    }

    pub fn link_participants(&self, link_id: &str) -> StoreResult<Vec<LinkParticipantRow>> {
        let mut stmt = self.0.prepare(
            "SELECT session_id, username, joined_ms, left_ms FROM link_participants
             WHERE link_id = ?1 ORDER BY joined_ms, id",
        )?;
        let rows = stmt.query_map([link_id], |r| {
            Ok(LinkParticipantRow {
                session_id: r.get(0)?,
                username: r.get(1)?,
                joined_ms: r.get(2)?,
                left_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Participant-milliseconds of a link up to `now_ms` (open stays count until now).
    pub fn link_participant_ms(&self, link_id: &str, now_ms: i64) -> StoreResult<i64> {
        Ok(self.0.query_row(
            "SELECT COALESCE(SUM(MAX(COALESCE(left_ms, ?2) - joined_ms, 0)), 0)
             FROM link_participants WHERE link_id = ?1",
            params![link_id, now_ms],
            |r| r.get(0),
        )?)
    }

    /// Participant-milliseconds in an organization's links since `from_ms` (the month's start).
    pub fn org_participant_ms(&self, org_id: i64, from_ms: i64, now_ms: i64) -> StoreResult<i64> {
        Ok(self.0.query_row(
            "SELECT COALESCE(SUM(MAX(COALESCE(lp.left_ms, ?3) - MAX(lp.joined_ms, ?2), 0)), 0)
             FROM link_participants lp JOIN call_links l ON l.id = lp.link_id
             JOIN projects p ON p.id = l.project_id
             WHERE p.organization_id = ?1 AND COALESCE(lp.left_ms, ?3) > ?2",
            params![org_id, from_ms, now_ms],
            |r| r.get(0),
        )?)
    }

    /// Answered dial-out seconds per trunk in an organization's links since `from_s`.
    pub fn org_dialout_seconds(
        &self,
        org_id: i64,
        from_s: i64,
        now_s: i64,
    ) -> StoreResult<Vec<(String, i64)>> {
        let mut stmt = self.0.prepare(
            "SELECT COALESCE(c.trunk, ''),
                    SUM(MAX(COALESCE(c.ended_at, ?3) - MAX(c.answered_at, ?2), 0))
             FROM call_records c JOIN call_links l ON l.room_id = c.room_id
             JOIN projects p ON p.id = l.project_id
             WHERE p.organization_id = ?1 AND c.kind = 'dialout' AND c.answered_at IS NOT NULL
               AND COALESCE(c.ended_at, ?3) > ?2
             GROUP BY c.trunk",
        )?;
        let rows = stmt.query_map(params![org_id, from_s, now_s], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Answered dial-out seconds per trunk in one link's room.
    pub fn link_dialout_seconds(
        &self,
        room_id: i64,
        now_s: i64,
    ) -> StoreResult<Vec<(String, i64)>> {
        let mut stmt = self.0.prepare(
            "SELECT COALESCE(trunk, ''), SUM(MAX(COALESCE(ended_at, ?2) - answered_at, 0))
             FROM call_records WHERE room_id = ?1 AND kind = 'dialout' AND answered_at IS NOT NULL
             GROUP BY trunk",
        )?;
        let rows = stmt.query_map(params![room_id, now_s], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // Guests.

    pub fn insert_guest(
        &self,
        hash: &str,
        id: &str,
        link_id: &str,
        display_name: &str,
        now_ms: i64,
    ) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO link_guests (token_hash, id, link_id, display_name, created_ms)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![hash, id, link_id, display_name, now_ms],
        )?;
        Ok(())
    }

    pub fn guests_of_link(&self, link_id: &str) -> StoreResult<i64> {
        Ok(self.0.query_row(
            "SELECT COUNT(*) FROM link_guests WHERE link_id = ?1",
            [link_id],
            |r| r.get(0),
        )?)
    }

    /// The guest a token names, while its link is open.
    pub fn guest_by_token_hash(&self, hash: &str) -> StoreResult<Option<GuestRow>> {
        Ok(self
            .0
            .query_row(
                &format!(
                    "SELECT g.id, g.link_id, g.display_name FROM link_guests g
                     JOIN call_links l ON l.id = g.link_id
                     WHERE g.token_hash = ?1 AND l.status IN {OPEN} AND l.deleted_ms IS NULL"
                ),
                [hash],
                |r| {
                    Ok(GuestRow {
                        id: r.get(0)?,
                        link_id: r.get(1)?,
                        display_name: r.get(2)?,
                    })
                },
            )
            .optional()?)
    }

    // Recordings.

    pub fn insert_recording(&self, r: &RecordingRow) -> StoreResult<()> {
        self.0.execute(
            &format!(
                "INSERT INTO recordings ({RECORDING_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ),
            params![
                r.id,
                r.link_id,
                r.path,
                r.started_ms,
                r.ended_ms,
                r.duration_ms,
                r.bytes
            ],
        )?;
        Ok(())
    }

    pub fn recordings_of_link(&self, link_id: &str) -> StoreResult<Vec<RecordingRow>> {
        let mut stmt = self.0.prepare(&format!(
            "SELECT {RECORDING_COLUMNS} FROM recordings WHERE link_id = ?1 ORDER BY started_ms, id"
        ))?;
        let rows = stmt.query_map([link_id], recording_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    // Webhooks.

    pub fn enqueue_webhook(&self, w: &WebhookRow, project_id: i64, now_ms: i64) -> StoreResult<()> {
        self.0.execute(
            "INSERT INTO webhook_queue (id, project_id, url, secret, body, attempts, next_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6)",
            params![w.id, project_id, w.url, w.secret, w.body, now_ms],
        )?;
        Ok(())
    }

    /// Deliveries due at `now_ms`, oldest first.
    pub fn due_webhooks(&self, now_ms: i64, limit: i64) -> StoreResult<Vec<WebhookRow>> {
        let mut stmt = self.0.prepare(
            "SELECT id, url, secret, body, attempts FROM webhook_queue WHERE next_ms <= ?1
             ORDER BY next_ms, rowid LIMIT ?2",
        )?;
        let rows = stmt.query_map(params![now_ms, limit], |r| {
            Ok(WebhookRow {
                id: r.get(0)?,
                url: r.get(1)?,
                secret: r.get(2)?,
                body: r.get(3)?,
                attempts: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The earliest time a queued delivery is due.
    pub fn next_webhook_ms(&self) -> StoreResult<Option<i64>> {
        Ok(self
            .0
            .query_row("SELECT MIN(next_ms) FROM webhook_queue", [], |r| r.get(0))?)
    }

    pub fn webhook_delivered(&self, id: &str) -> StoreResult<()> {
        self.0
            .execute("DELETE FROM webhook_queue WHERE id = ?1", [id])?;
        Ok(())
    }

    pub fn webhook_retry(&self, id: &str, attempts: i64, next_ms: i64) -> StoreResult<()> {
        self.0.execute(
            "UPDATE webhook_queue SET attempts = ?2, next_ms = ?3 WHERE id = ?1",
            params![id, attempts, next_ms],
        )?;
        Ok(())
    }
}
