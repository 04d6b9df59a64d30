//! Established SIP dialogs of phone legs (schema migration 3), kept while each lives so that a
//! restart after a crash can send the BYE the phone still waits for.

use std::net::SocketAddr;

use dialbridge_sip::dialog::{DialogId, SavedDialog};
use dialbridge_sip::endpoint::Target;
use dialbridge_sip::transport::Transport;
use rusqlite::{params, Row};

use super::{StoreResult, Tx};

/// Migration 3. One row per leg (`leg` is the dialbridge call id); `route_set` is a JSON array
/// of Route values; `transport` and `address` are where requests go when the route or target
/// names no IP address (the trunk, or the caller's source).
pub(super) const MIGRATION: &str = r#"
CREATE TABLE sip_dialogs (
    id            INTEGER PRIMARY KEY,
    leg           TEXT NOT NULL UNIQUE,
    call_id       TEXT NOT NULL,
    local_tag     TEXT NOT NULL,
    remote_tag    TEXT NOT NULL,
    local_uri     TEXT NOT NULL,
    remote_uri    TEXT NOT NULL,
    remote_target TEXT NOT NULL,
    route_set     TEXT NOT NULL,
    local_seq     INTEGER NOT NULL,
    transport     TEXT NOT NULL,
    address       TEXT NOT NULL,
    updated_at    INTEGER NOT NULL
);
"#;

/// A stored dialog and the leg it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegDialog {
    pub leg: String,
    pub dialog: SavedDialog,
}

const COLUMNS: &str = "id, leg, call_id, local_tag, remote_tag, local_uri, remote_uri, \
     remote_target, route_set, local_seq, transport, address";

/// One row, or why it cannot be used (a column of the wrong type or a value that does not parse).
fn from_row(r: &Row) -> Result<LegDialog, String> {
    let text = |name: &str| r.get::<_, String>(name).map_err(|e| format!("{name}: {e}"));
    let route_set: Vec<String> =
        serde_json::from_str(&text("route_set")?).map_err(|e| format!("route_set: {e}"))?;
    let local_seq = r
        .get::<_, i64>("local_seq")
        .map_err(|e| format!("local_seq: {e}"))
        .and_then(|n| u32::try_from(n).map_err(|_| format!("local_seq: {n} is no CSeq")))?;
    let transport = text("transport")?;
    let transport = Transport::from_via_token(&transport)
        .ok_or_else(|| format!("transport: `{transport}` is unknown"))?;
    let address = text("address")?;
    let addr: SocketAddr = address
        .parse()
        .map_err(|_| format!("address: `{address}` is not an IP address and port"))?;
    Ok(LegDialog {
        leg: text("leg")?,
        dialog: SavedDialog {
            id: DialogId {
                call_id: text("call_id")?,
                local_tag: text("local_tag")?,
                remote_tag: text("remote_tag")?,
            },
            local: text("local_uri")?,
            remote: text("remote_uri")?,
            remote_target: text("remote_target")?,
            route_set,
            local_seq,
            fallback: Target { transport, addr },
        },
    })
}

impl Tx<'_> {
    /// Stores the dialog of leg `leg`, replacing what the leg stored before (a target refresh).
    pub fn save_dialog(&self, leg: &str, dialog: &SavedDialog, now: i64) -> StoreResult<()> {
        let route_set = serde_json::Value::from(dialog.route_set.clone()).to_string();
        self.0.execute(
            "INSERT INTO sip_dialogs (leg, call_id, local_tag, remote_tag, local_uri, remote_uri,
                 remote_target, route_set, local_seq, transport, address, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(leg) DO UPDATE SET call_id = excluded.call_id,
                 local_tag = excluded.local_tag, remote_tag = excluded.remote_tag,
                 local_uri = excluded.local_uri, remote_uri = excluded.remote_uri,
                 remote_target = excluded.remote_target, route_set = excluded.route_set,
                 local_seq = excluded.local_seq, transport = excluded.transport,
                 address = excluded.address, updated_at = excluded.updated_at",
            params![
                leg,
                dialog.id.call_id,
                dialog.id.local_tag,
                dialog.id.remote_tag,
                dialog.local,
                dialog.remote,
                dialog.remote_target,
                route_set,
                dialog.local_seq,
                dialog.fallback.transport.as_str(),
                dialog.fallback.addr.to_string(),
                now
            ],
        )?;
        Ok(())
    }

    /// Forgets the dialog of leg `leg` (its call is over), if it stored one.
    pub fn delete_dialog(&self, leg: &str) -> StoreResult<()> {
        self.0
            .execute("DELETE FROM sip_dialogs WHERE leg = ?1", [leg])?;
        Ok(())
    }

    /// Forgets one row of [`Tx::saved_dialogs`].
    pub fn delete_dialog_row(&self, id: i64) -> StoreResult<()> {
        self.0
            .execute("DELETE FROM sip_dialogs WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Every stored dialog by row id, oldest first; a row that cannot be read comes with the
    /// reason instead, so one bad row costs only itself.
    pub fn saved_dialogs(&self) -> StoreResult<Vec<(i64, Result<LegDialog, String>)>> {
        let mut stmt = self
            .0
            .prepare(&format!("SELECT {COLUMNS} FROM sip_dialogs ORDER BY id"))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>("id")?, from_row(r))))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreError};
    use super::*;

    fn dialog(call_id: &str) -> SavedDialog {
        SavedDialog {
            id: DialogId {
                call_id: call_id.into(),
                local_tag: "l1".into(),
                remote_tag: "r1".into(),
            },
            local: "<sip:gw@192.0.2.10>;tag=l1".into(),
            remote: "\"Phone\" <sip:+4930123456@198.51.100.7>;tag=r1".into(),
            remote_target: "sip:phone@198.51.100.9:5070".into(),
            route_set: vec!["<sip:198.51.100.8;lr>".into(), "<sip:p1.example;lr>".into()],
            local_seq: 1,
            fallback: Target {
                transport: Transport::Tcp,
                addr: "198.51.100.7:5060".parse().expect("addr"),
            },
        }
    }

    fn legs(tx: &Tx) -> Vec<Result<LegDialog, String>> {
        tx.saved_dialogs()
            .expect("list")
            .into_iter()
            .map(|(_, row)| row)
            .collect()
    }

    #[test]
    fn dialogs_are_saved_updated_listed_and_deleted() {
        let store = Store::open_in_memory().expect("store");
        store
            .write(|tx| {
                tx.save_dialog("leg-a", &dialog("a@gw"), 1)?;
                tx.save_dialog("leg-b", &dialog("b@gw"), 1)?;
                // A target refresh replaces the leg's row.
                let mut moved = dialog("a@gw");
                moved.remote_target = "sip:phone@198.51.100.99:5070".into();
                moved.route_set.clear();
                tx.save_dialog("leg-a", &moved, 2)?;
                assert_eq!(
                    legs(tx),
                    vec![
                        Ok(LegDialog {
                            leg: "leg-a".into(),
                            dialog: moved
                        }),
                        Ok(LegDialog {
                            leg: "leg-b".into(),
                            dialog: dialog("b@gw")
                        }),
                    ]
                );
                tx.delete_dialog("leg-a")?;
                tx.delete_dialog("no-such-leg")?;
                let rows = tx.saved_dialogs()?;
                assert_eq!(rows.len(), 1);
                tx.delete_dialog_row(rows[0].0)?;
                assert!(legs(tx).is_empty());
                Ok::<_, StoreError>(())
            })
            .expect("store operations");
    }

    #[test]
    fn a_corrupt_row_is_reported_and_the_others_still_read() {
        let store = Store::open_in_memory().expect("store");
        store
            .write(|tx| {
                for leg in ["leg-a", "leg-b", "leg-c", "leg-d", "leg-e"] {
                    tx.save_dialog(leg, &dialog(&format!("{leg}@gw")), 1)?;
                }
                // What a damaged file or a hand edit leaves (SQLite keeps any type in any column).
                for (leg, column, value) in [
                    ("leg-a", "route_set", "not json"),
                    ("leg-b", "transport", "SCTP"),
                    ("leg-c", "address", "phone.example"),
                    ("leg-d", "local_seq", "many"),
                ] {
                    tx.0.execute(
                        &format!("UPDATE sip_dialogs SET {column} = ?2 WHERE leg = ?1"),
                        [leg, value],
                    )?;
                }
                tx.0.execute(
                    "UPDATE sip_dialogs SET local_seq = -1 WHERE leg = 'leg-e'",
                    [],
                )?;
                tx.save_dialog("leg-good", &dialog("good@gw"), 1)?;
                let rows = legs(tx);
                assert_eq!(rows.len(), 6);
                let errors: Vec<String> = rows.iter().filter_map(|r| r.clone().err()).collect();
                assert_eq!(errors.len(), 5, "{errors:?}");
                for (error, field) in errors.iter().zip([
                    "route_set",
                    "transport",
                    "address",
                    "local_seq",
                    "local_seq",
                ]) {
                    assert!(error.starts_with(field), "{error}");
                }
                assert_eq!(
                    rows.last().cloned(),
                    Some(Ok(LegDialog {
                        leg: "leg-good".into(),
                        dialog: dialog("good@gw")
                    }))
                );
                Ok::<_, StoreError>(())
            })
            .expect("store operations");
    }
}
