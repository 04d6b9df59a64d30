//! Call links (`/api/calls`): a project creates a link, people open its URL and talk as guests,
//! the organization pays per participant-minute and never beyond its monthly spend limit.
//!
//! A link is a room of the room layer without an owner: its guests are attendees of that room
//! (so the call API, the media endpoint and dial-out work on it), and the link service is the
//! rooms' [`RoomPolicy`]: it refuses joins and dial-outs the link or the budget does not allow,
//! and meters every session's stay in the call inside the transaction that changed it.

pub mod admin;
mod clock;
mod meter;
mod policy;
pub mod recording;
pub mod webhooks;
pub mod when;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use rand::distr::{Alphanumeric, SampleString};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::auth::{self, AuthUser, GUEST_PREFIX};
use crate::calls::legs::PhoneLegs;
use crate::config::{Config, LinksConfig};
use crate::events::RoomEvent;
use crate::money::{minutes_text, Money};
use crate::room::{ErrorKind, RoomError, Rooms};
use crate::runtime::MediaHandle;
use crate::store::links::{LinkRow, NewLink, OrgRow, ProjectRow, RecordingRow};
use crate::store::{StoreError, Tx};
use crate::sync::lock;

use webhooks::event;
use when::{iso, now_ms};

/// Link statuses: one vocabulary for the API, the store and webhooks.
pub mod status {
    pub const CREATED: &str = "created";
    pub const ACTIVE: &str = "active";
    pub const ENDED: &str = "ended";
    pub const EXPIRED: &str = "expired";
}

/// Characters of a link id: about 119 bits, so a link's URL cannot be guessed.
const LINK_ID_LEN: usize = 20;
const GUEST_ID_LEN: usize = 16;
/// Guests one link admits, so an open link cannot be used to fill the store.
pub const MAX_GUESTS: i64 = 500;
pub const MAX_TITLE: usize = 255;
pub const MAX_GUEST_NAME: usize = 64;

/// A refusal of the call-link API: the HTTP status, a stable error word and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkError {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

impl LinkError {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> LinkError {
        LinkError {
            status,
            error,
            message: message.into(),
        }
    }

    pub fn spending_limit() -> LinkError {
        LinkError::new(
            402,
            "spending_limit_reached",
            "Limite de gastos foi atingido",
        )
    }

    pub fn organization_not_found() -> LinkError {
        LinkError::new(404, "organization_not_found", "Organização não encontrada")
    }

    pub fn subscription_not_found() -> LinkError {
        LinkError::new(403, "subscription_not_found", "Assinatura não encontrada")
    }

    pub fn call_not_found() -> LinkError {
        LinkError::new(
            404,
            "call_not_found",
            "no call with this id in your project",
        )
    }

    pub fn internal() -> LinkError {
        LinkError::new(500, "internal", "internal error")
    }
}

impl From<StoreError> for LinkError {
    fn from(e: StoreError) -> LinkError {
        tracing::error!(error = %e, "store operation failed");
        LinkError::internal()
    }
}

impl From<RoomError> for LinkError {
    fn from(e: RoomError) -> LinkError {
        match e.kind {
            ErrorKind::PaymentRequired => LinkError::spending_limit(),
            ErrorKind::Internal => LinkError::internal(),
            _ => LinkError::new(409, e.error, e.message),
        }
    }
}

pub type LinkResult<T> = Result<T, LinkError>;

/// A link as the API shows it (`POST /api/calls`, `GET /api/calls/{id}`, webhooks' `call`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallView {
    pub id: String,
    pub title: Option<String>,
    pub url: String,
    pub status: &'static str,
    pub created: String,
    pub updated: String,
    pub started: Option<String>,
    pub ended: Option<String>,
    pub deleted: Option<String>,
    pub expires_at: String,
    pub recording: bool,
    pub total_billable_minutes: String,
    /// The room behind the link, for the call, media and event APIs.
    pub room_token: String,
}

/// `GET /api/calls/{id}/status`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub call_id: String,
    pub status: &'static str,
    pub started: Option<String>,
    pub duration_minutes: i64,
    pub active_participants: usize,
    pub participants: Vec<ParticipantView>,
    pub total_billable_minutes: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantView {
    pub session_id: String,
    pub username: String,
    pub joined_at: String,
    pub active: bool,
}

/// One recording (`GET /api/calls/{id}/recordings`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingView {
    pub id: String,
    pub started: String,
    pub ended: String,
    pub duration_seconds: i64,
    pub size: i64,
    /// Where it downloads, as `audio/ogg`.
    pub url: String,
}

/// A guest pass (`POST /api/calls/{id}/guests`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GuestView {
    /// Bearer token for the room, call, media and event APIs of this link's room only.
    pub token: String,
    pub call_id: String,
    pub room_token: String,
    pub attendee_id: i64,
    pub display_name: String,
    pub moderator: bool,
    pub expires_at: String,
}

/// What `POST /api/calls` asks for, once parsed.
#[derive(Debug, Clone, Default)]
pub struct NewCall {
    pub title: Option<String>,
    pub expires_ms: Option<i64>,
    pub recording: Option<bool>,
}

/// Which links `GET /api/calls` lists.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub from_ms: i64,
    pub to_ms: i64,
    pub page: i64,
    pub limit: i64,
}

/// A page of links.
#[derive(Debug, Clone, Serialize)]
pub struct CallPage {
    pub data: Vec<CallView>,
    pub page: i64,
    pub limit: i64,
    pub total: i64,
}

/// The call-link service; clones share everything.
#[derive(Clone)]
pub struct CallLinks(Arc<Inner>);

struct Inner {
    rooms: Rooms,
    public_url: OnceLock<String>,
    config: LinksConfig,
    trunk_prices: HashMap<String, Money>,
    /// Phone legs, hung up when a budget runs out.
    legs: OnceLock<Arc<PhoneLegs>>,
    /// Told when a webhook was queued.
    webhooks: Arc<Notify>,
    /// Where recordings go.
    recording_dir: PathBuf,
    /// The media engine, which taps recorded rooms.
    media: OnceLock<MediaHandle>,
    /// Recordings running, by room: (recording id, link id, start).
    recording: Mutex<HashMap<i64, (String, String, i64)>>,
}

/// The link's status as of `now`: a link whose time passed before it started is expired even
/// before the clock notes it.
fn effective_status(link: &LinkRow, now: i64) -> &'static str {
    match link.status.as_str() {
        status::CREATED if now >= link.expires_ms => status::EXPIRED,
        status::CREATED => status::CREATED,
        status::ACTIVE => status::ACTIVE,
        status::EXPIRED => status::EXPIRED,
        _ => status::ENDED,
    }
}

impl CallLinks {
    /// The service over `rooms`, which it becomes the policy of.
    pub fn new(config: &Config, rooms: Rooms) -> CallLinks {
        let links = CallLinks(Arc::new(Inner {
            rooms: rooms.clone(),
            public_url: OnceLock::new(),
            config: config.links.clone(),
            trunk_prices: config
                .trunks
                .iter()
                .map(|t| (t.name.clone(), t.price_per_minute))
                .collect(),
            legs: OnceLock::new(),
            webhooks: Arc::new(Notify::new()),
            recording_dir: config.recording.path.clone(),
            media: OnceLock::new(),
            recording: Mutex::new(HashMap::new()),
        }));
        rooms.set_policy(Arc::new(policy::LinkPolicy(links.clone())));
        links
    }

    /// The base of link URLs, once the HTTP address is known.
    pub fn set_public_url(&self, url: String) {
        let _ = self.0.public_url.set(url);
    }

    /// The media engine, to record calls.
    pub fn set_media(&self, media: MediaHandle) {
        let _ = self.0.media.set(media);
    }

    /// The phone legs to hang up when a budget runs out.
    pub fn set_phone_legs(&self, legs: Arc<PhoneLegs>) {
        let _ = self.0.legs.set(legs);
    }

    fn rooms(&self) -> &Rooms {
        &self.0.rooms
    }

    /// Closes what a previous run left open (its sessions are gone), then starts the clock and
    /// the webhook delivery.
    pub fn start(&self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        let now = now_ms();
        let closed = self.rooms().store().write(|tx| {
            let closed = tx.close_all_link_participants(now)?;
            for link in tx.open_links()? {
                if link.status == status::ACTIVE && link.empty_since_ms.is_none() {
                    tx.set_link_empty_since(&link.id, Some(now))?;
                }
            }
            Ok::<_, StoreError>(closed)
        })?;
        if closed > 0 {
            tracing::warn!(
                stays = closed,
                "closed call link stays left open by the previous run"
            );
        }
        tokio::spawn(clock::run(self.clone(), shutdown.clone()));
        tokio::spawn(webhooks::deliver(
            self.rooms().shared_store(),
            self.0.config.clone(),
            self.0.webhooks.clone(),
            shutdown,
        ));
        Ok(())
    }

    fn url(&self, id: &str) -> String {
        let base = self.0.public_url.get().map(String::as_str).unwrap_or("");
        format!("{base}/calls/{id}")
    }

    /// The link as the API shows it, read in `tx` as of `now`.
    fn view(&self, tx: &Tx, link: &LinkRow, now: i64) -> Result<CallView, StoreError> {
        let minutes = minutes_text(tx.link_participant_ms(&link.id, now)?);
        Ok(CallView {
            id: link.id.clone(),
            title: link.title.clone(),
            url: self.url(&link.id),
            status: effective_status(link, now),
            created: iso(link.created_ms),
            updated: iso(link.updated_ms),
            started: link.started_ms.map(iso),
            ended: link.ended_ms.map(iso),
            deleted: link.deleted_ms.map(iso),
            expires_at: iso(link.expires_ms),
            recording: link.recording,
            total_billable_minutes: minutes,
            room_token: link.room_token.clone(),
        })
    }

    fn view_json(&self, tx: &Tx, link: &LinkRow, now: i64) -> Result<Value, StoreError> {
        Ok(serde_json::to_value(self.view(tx, link, now)?).unwrap_or(Value::Null))
    }

    /// The organization of a project and its subscription, or the seed's errors.
    fn org_of(tx: &Tx, project: &ProjectRow) -> LinkResult<OrgRow> {
        let org = match project.organization_id {
            Some(id) => tx.org(id)?,
            None => None,
        }
        .ok_or_else(LinkError::organization_not_found)?;
        if !org.subscribed {
            return Err(LinkError::subscription_not_found());
        }
        Ok(org)
    }

    /// The project's link `id`; another project's is not found.
    fn own_link(tx: &Tx, project: &ProjectRow, id: &str) -> LinkResult<LinkRow> {
        tx.link(id)?
            .filter(|l| l.project_id == project.id)
            .ok_or_else(LinkError::call_not_found)
    }

    /// The project's link `id` unless deleted: a deleted link is gone from its own URL (the
    /// list still shows it, with its `deleted` time, for the record).
    fn live_link(tx: &Tx, project: &ProjectRow, id: &str) -> LinkResult<LinkRow> {
        let link = Self::own_link(tx, project, id)?;
        match link.deleted_ms {
            None => Ok(link),
            Some(_) => Err(LinkError::call_not_found()),
        }
    }

    pub fn create(&self, project: &ProjectRow, new: NewCall) -> LinkResult<CallView> {
        let now = now_ms();
        if let Some(expires) = new.expires_ms {
            if expires <= now {
                return Err(LinkError::new(
                    422,
                    "invalid_expires_at",
                    "expiresAt must be later than now",
                ));
            }
        }
        let result = self.rooms().store().write(|tx| {
            let project = tx.project(project.id)?.ok_or_else(LinkError::internal)?;
            let org = Self::org_of(tx, &project)?;
            // Asking for a recording the plan lacks is refused; the project's default gives way.
            let recording = match new.recording {
                Some(asked) => asked,
                None => project.enable_recording && org.recording,
            };
            if recording && !org.recording {
                return Err(LinkError::new(
                    403,
                    "recording_not_in_plan",
                    "the organization's plan does not include recording",
                ));
            }
            meter::check_create(tx, &org, &self.rates(), now)?;
            let id = loop {
                let candidate = Alphanumeric
                    .sample_string(&mut rand::rng(), LINK_ID_LEN)
                    .to_ascii_lowercase();
                if tx.link(&candidate)?.is_none() {
                    break candidate;
                }
            };
            let title = new
                .title
                .as_deref()
                .map(str::trim)
                .filter(|t| !t.is_empty());
            let (room_id, _) = self.rooms().create_link_room(tx, title.unwrap_or("Call"))?;
            let expires_ms = new
                .expires_ms
                .unwrap_or(now.saturating_add(project.link_lifetime.saturating_mul(1000)));
            tx.insert_link(&NewLink {
                id: &id,
                project_id: project.id,
                room_id,
                title,
                recording,
                now_ms: now,
                expires_ms,
            })?;
            let link = tx.link(&id)?.ok_or_else(LinkError::internal)?;
            let view = self.view(tx, &link, now)?;
            webhooks::enqueue(
                tx,
                &project,
                event::CALL_CREATED,
                &serde_json::to_value(&view).unwrap_or(Value::Null),
                json!({}),
            )?;
            tracing::info!(call = %id, project = %project.name, "call link created");
            Ok(view)
        });
        self.0.webhooks.notify_one();
        result
    }

    pub fn list(&self, project: &ProjectRow, q: &ListQuery) -> LinkResult<CallPage> {
        let now = now_ms();
        self.rooms().store().write(|tx| {
            let (rows, total) = tx.links_of_project(
                project.id,
                q.from_ms,
                q.to_ms,
                (q.page - 1).saturating_mul(q.limit),
                q.limit,
            )?;
            let data = rows
                .iter()
                .map(|l| self.view(tx, l, now))
                .collect::<Result<_, _>>()?;
            Ok(CallPage {
                data,
                page: q.page,
                limit: q.limit,
                total,
            })
        })
    }

    pub fn get(&self, project: &ProjectRow, id: &str) -> LinkResult<CallView> {
        let now = now_ms();
        self.rooms().store().write(|tx| {
            let link = Self::live_link(tx, project, id)?;
            Ok(self.view(tx, &link, now)?)
        })
    }

    pub fn status(&self, project: &ProjectRow, id: &str) -> LinkResult<StatusView> {
        let now = now_ms();
        self.rooms().store().write(|tx| {
            let link = Self::live_link(tx, project, id)?;
            let stays = tx.link_participants(&link.id)?;
            let participants: Vec<ParticipantView> = stays
                .iter()
                .map(|p| ParticipantView {
                    session_id: p.session_id.clone(),
                    username: p.username.clone(),
                    joined_at: iso(p.joined_ms),
                    active: p.left_ms.is_none(),
                })
                .collect();
            let duration = link
                .started_ms
                .map(|s| (link.ended_ms.unwrap_or(now) - s).max(0) / 60_000)
                .unwrap_or(0);
            Ok(StatusView {
                call_id: link.id.clone(),
                status: effective_status(&link, now),
                started: link.started_ms.map(iso),
                duration_minutes: duration,
                active_participants: participants.iter().filter(|p| p.active).count(),
                participants,
                total_billable_minutes: minutes_text(tx.link_participant_ms(&link.id, now)?),
            })
        })
    }

    /// Ends the link's call (`POST /api/calls/{id}/end`); ending an ended link changes nothing.
    pub fn end(&self, project: &ProjectRow, id: &str) -> LinkResult<CallView> {
        self.close(Some(project), id, Closing::Ended("ended"))
    }

    /// Deletes the link (`DELETE /api/calls/{id}`): its call ends and it can no longer be joined.
    pub fn delete(&self, project: &ProjectRow, id: &str) -> LinkResult<CallView> {
        self.close(Some(project), id, Closing::Deleted)
    }

    /// Empties the link's room and, in the same transaction, closes the link as `how` says.
    fn close(&self, project: Option<&ProjectRow>, id: &str, how: Closing) -> LinkResult<CallView> {
        let link = self.rooms().store().write(|tx| match (project, how) {
            // Deleting is idempotent; anything else finds a deleted link gone.
            (Some(p), Closing::Deleted) => Self::own_link(tx, p, id),
            (Some(p), _) => Self::live_link(tx, p, id),
            (None, _) => tx.link(id)?.ok_or_else(LinkError::call_not_found),
        })?;
        let result = self.rooms().close_room(link.room_id, |tx| {
            (|| {
                let now = now_ms();
                let link = tx.link(&link.id)?.ok_or_else(LinkError::call_not_found)?;
                let project = tx.project(link.project_id)?.ok_or_else(LinkError::internal)?;
                let open = matches!(link.status.as_str(), status::CREATED | status::ACTIVE);
                if let Closing::Deleted = how {
                    tx.set_link_deleted(&link.id, now)?;
                }
                if open {
                    let started = link.status == status::ACTIVE;
                    let (new_status, name, reason) = match how {
                        // Someone joined since the clock looked: the call ends instead.
                        Closing::Expired if started => (status::ENDED, event::CALL_ENDED, "expired"),
                        Closing::Expired => (status::EXPIRED, event::CALL_EXPIRED, "expired"),
                        Closing::Deleted => (status::ENDED, event::CALL_ENDED, "deleted"),
                        Closing::Ended(reason) => (status::ENDED, event::CALL_ENDED, reason),
                    };
                    let call = self.view_json(tx, &link, now)?;
                    for session in tx.close_link_participants(&link.id, now)? {
                        webhooks::enqueue(
                            tx,
                            &project,
                            event::PARTICIPANT_LEFT,
                            &call,
                            json!({"sessionId": session}),
                        )?;
                    }
                    tx.set_link_status(&link.id, new_status, now, false, true)?;
                    let link = tx.link(&link.id)?.ok_or_else(LinkError::internal)?;
                    let call = self.view_json(tx, &link, now)?;
                    webhooks::enqueue(tx, &project, name, &call, json!({"reason": reason}))?;
                    tracing::info!(call = %link.id, status = new_status, reason, "call link closed");
                }
                let link = tx.link(&link.id)?.ok_or_else(LinkError::internal)?;
                Ok(self.view(tx, &link, now)?)
            })()
            .map_err(|e: LinkError| RoomError::new(ErrorKind::Internal, "internal", e.message))
        });
        self.0.webhooks.notify_one();
        Ok(result?)
    }

    /// A guest pass for link `id` (`POST /api/calls/{id}/guests`): anyone with the link may get
    /// one; a moderator's only the link's project.
    pub fn add_guest(
        &self,
        id: &str,
        name: &str,
        moderator: bool,
        project: Option<&ProjectRow>,
    ) -> LinkResult<GuestView> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > MAX_GUEST_NAME {
            return Err(LinkError::new(
                400,
                "invalid_name",
                format!("name must have 1 to {MAX_GUEST_NAME} characters, not all white space"),
            ));
        }
        let now = now_ms();
        let token = auth::new_token();
        self.rooms().store().write(|tx| {
            let link = tx.link(id)?.ok_or_else(LinkError::call_not_found)?;
            if moderator && project.is_none_or(|p| p.id != link.project_id) {
                return Err(LinkError::new(
                    403,
                    "moderator_needs_project_token",
                    "only the link's project (its API token) may make a moderator",
                ));
            }
            policy::check_open(&link, now).map_err(|e| LinkError::new(410, e.error, e.message))?;
            let project_row = tx
                .project(link.project_id)?
                .ok_or_else(LinkError::internal)?;
            let org = Self::org_of(tx, &project_row)?;
            meter::check_join(tx, &org, &self.rates(), &link, now)?;
            if tx.guests_of_link(&link.id)? >= MAX_GUESTS {
                return Err(LinkError::new(
                    429,
                    "too_many_guests",
                    format!("a link admits at most {MAX_GUESTS} guests"),
                ));
            }
            let guest = AuthUser {
                id: format!(
                    "{GUEST_PREFIX}{}",
                    Alphanumeric.sample_string(&mut rand::rng(), GUEST_ID_LEN)
                ),
                display_name: name.to_string(),
            };
            tx.insert_guest(&auth::hash_token(&token), &guest.id, &link.id, name, now)?;
            let attendee_id = self
                .rooms()
                .add_guest(tx, link.room_id, &guest, moderator)?;
            tracing::info!(call = %link.id, guest = %guest.id, moderator, "guest pass issued");
            Ok(GuestView {
                token: token.clone(),
                call_id: link.id.clone(),
                room_token: link.room_token.clone(),
                attendee_id,
                display_name: name.to_string(),
                moderator,
                expires_at: iso(link.expires_ms),
            })
        })
    }

    /// The project a Bearer header names (project API tokens).
    pub fn project_of(&self, header: Option<&str>) -> Result<ProjectRow, auth::AuthError> {
        auth::authenticate_project(self.rooms().store(), header)
    }
}

impl CallLinks {
    /// Starts recording the call of room `room_id` if it is a link's with recording on.
    fn start_recording(&self, room_id: i64) {
        let Some(media) = self.0.media.get() else {
            return;
        };
        let link = match self.rooms().store().write(|tx| tx.link_of_room(room_id)) {
            Ok(Some(link)) if link.recording && link.status == status::ACTIVE => link,
            Ok(_) => return,
            Err(e) => {
                tracing::error!(error = %e, "cannot read a link to record it");
                return;
            }
        };
        let mut running = lock(&self.0.recording);
        if running.contains_key(&room_id) {
            return;
        }
        let id = format!(
            "rec_{}",
            Alphanumeric
                .sample_string(&mut rand::rng(), 16)
                .to_ascii_lowercase()
        );
        let started = now_ms();
        let path = self.0.recording_dir.join(format!("{}-{id}.ogg", link.id));
        let links = self.clone();
        let (link_id, rec_id) = (link.id.clone(), id.clone());
        let sink = std::fs::create_dir_all(&self.0.recording_dir).and_then(|()| {
            recording::start(path, move |finished| {
                links.recording_ready(&link_id, &rec_id, started, finished)
            })
        });
        match sink {
            Ok(sink) => {
                media.record(room_id, Some(sink));
                running.insert(room_id, (id.clone(), link.id.clone(), started));
                self.rooms()
                    .announce(room_id, RoomEvent::Recording { active: true });
                tracing::info!(call = %link.id, recording = %id, "recording started");
            }
            Err(e) => {
                tracing::error!(call = %link.id, dir = %self.0.recording_dir.display(), error = %e, "cannot start a recording");
            }
        }
    }

    /// Stops the recording of room `room_id`, if one runs; its file completes on its thread.
    fn stop_recording(&self, room_id: i64) {
        if lock(&self.0.recording).remove(&room_id).is_none() {
            return;
        }
        if let Some(media) = self.0.media.get() {
            media.record(room_id, None);
        }
        self.rooms()
            .announce(room_id, RoomEvent::Recording { active: false });
    }

    /// A recording's file is complete: it is listed and `recording.ready` goes out.
    fn recording_ready(
        &self,
        link_id: &str,
        id: &str,
        started_ms: i64,
        finished: Option<recording::Finished>,
    ) {
        let Some(finished) = finished else {
            return;
        };
        let now = now_ms();
        let result = self.rooms().store().write(|tx| {
            let Some(link) = tx.link(link_id)? else {
                return Ok(());
            };
            let row = RecordingRow {
                id: id.to_string(),
                link_id: link_id.to_string(),
                path: finished.path.to_string_lossy().into_owned(),
                started_ms,
                ended_ms: now,
                duration_ms: finished.duration_ms,
                bytes: finished.bytes,
            };
            tx.insert_recording(&row)?;
            if let Some(project) = tx.project(link.project_id)? {
                let call = self.view_json(tx, &link, now)?;
                let data = serde_json::to_value(self.recording_view(&row)).unwrap_or(Value::Null);
                webhooks::enqueue(tx, &project, event::RECORDING_READY, &call, data)?;
            }
            Ok::<_, StoreError>(())
        });
        match result {
            Ok(()) => tracing::info!(call = %link_id, recording = %id, "recording ready"),
            Err(e) => tracing::error!(call = %link_id, error = %e, "cannot list a recording"),
        }
        self.0.webhooks.notify_one();
    }

    fn recording_view(&self, r: &RecordingRow) -> RecordingView {
        let base = self.0.public_url.get().map(String::as_str).unwrap_or("");
        RecordingView {
            id: r.id.clone(),
            started: iso(r.started_ms),
            ended: iso(r.ended_ms),
            duration_seconds: r.duration_ms / 1000,
            size: r.bytes,
            url: format!("{base}/api/calls/{}/recordings/{}", r.link_id, r.id),
        }
    }

    /// The link's finished recordings, oldest first.
    pub fn recordings(&self, project: &ProjectRow, id: &str) -> LinkResult<Vec<RecordingView>> {
        self.rooms().store().write(|tx| {
            let link = Self::live_link(tx, project, id)?;
            Ok(tx
                .recordings_of_link(&link.id)?
                .iter()
                .map(|r| self.recording_view(r))
                .collect())
        })
    }

    /// The file of one of the link's recordings.
    pub fn recording_file(
        &self,
        project: &ProjectRow,
        id: &str,
        recording: &str,
    ) -> LinkResult<PathBuf> {
        self.rooms().store().write(|tx| {
            let link = Self::live_link(tx, project, id)?;
            tx.recordings_of_link(&link.id)?
                .into_iter()
                .find(|r| r.id == recording)
                .map(|r| PathBuf::from(r.path))
                .ok_or_else(|| {
                    LinkError::new(404, "recording_not_found", "no such recording of this call")
                })
        })
    }
}

/// How a link is closed.
#[derive(Debug, Clone, Copy)]
enum Closing {
    /// Its time passed before it started.
    Expired,
    /// Its project deleted it.
    Deleted,
    /// Its call ended, for the reason given (ended, expired, empty).
    Ended(&'static str),
}
