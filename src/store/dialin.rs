//! Dial-in settings of rooms (schema migration 2): the room's own number, its PIN, and whether a
//! caller waits for the call to start or is refused when the room has none.

use rusqlite::{params, OptionalExtension, Row};

use super::{StoreResult, Tx};

/// Migration 2. SQLite unique indexes allow many NULLs, so rooms without a number or PIN coexist.
pub(super) const MIGRATION: &str = r#"
ALTER TABLE rooms ADD COLUMN dialin_number TEXT;
ALTER TABLE rooms ADD COLUMN dialin_pin TEXT;
ALTER TABLE rooms ADD COLUMN dialin_wait INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX rooms_dialin_number ON rooms(dialin_number);
CREATE UNIQUE INDEX rooms_dialin_pin ON rooms(dialin_pin);
"#;

/// A room's dial-in settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialinRow {
    pub room_id: i64,
    pub token: String,
    pub number: Option<String>,
    pub pin: Option<String>,
    pub wait_for_call: bool,
}

const COLUMNS: &str = "id, token, dialin_number, dialin_pin, dialin_wait";

fn from_row(r: &Row) -> rusqlite::Result<DialinRow> {
    Ok(DialinRow {
        room_id: r.get(0)?,
        token: r.get(1)?,
        number: r.get(2)?,
        pin: r.get(3)?,
        wait_for_call: r.get(4)?,
    })
}

impl Tx<'_> {
    fn dialin_where(
        &self,
        condition: &str,
        value: &dyn rusqlite::ToSql,
    ) -> StoreResult<Option<DialinRow>> {
        Ok(self
            .0
            .query_row(
                &format!("SELECT {COLUMNS} FROM rooms WHERE {condition} = ?1"),
                [value],
                from_row,
            )
            .optional()?)
    }

    pub fn room_dialin(&self, room_id: i64) -> StoreResult<Option<DialinRow>> {
        self.dialin_where("id", &room_id)
    }

    pub fn room_dialin_by_token(&self, token: &str) -> StoreResult<Option<DialinRow>> {
        self.dialin_where("token", &token)
    }

    pub fn room_by_dialin_number(&self, number: &str) -> StoreResult<Option<DialinRow>> {
        self.dialin_where("dialin_number", &number)
    }

    pub fn room_by_dialin_pin(&self, pin: &str) -> StoreResult<Option<DialinRow>> {
        self.dialin_where("dialin_pin", &pin)
    }

    pub fn set_room_dialin_number(&self, room_id: i64, number: Option<&str>) -> StoreResult<()> {
        self.0.execute(
            "UPDATE rooms SET dialin_number = ?2 WHERE id = ?1",
            params![room_id, number],
        )?;
        Ok(())
    }

    pub fn set_room_dialin_pin(&self, room_id: i64, pin: &str) -> StoreResult<()> {
        self.0.execute(
            "UPDATE rooms SET dialin_pin = ?2 WHERE id = ?1",
            params![room_id, pin],
        )?;
        Ok(())
    }

    pub fn set_room_dialin_wait(&self, room_id: i64, wait: bool) -> StoreResult<()> {
        self.0.execute(
            "UPDATE rooms SET dialin_wait = ?2 WHERE id = ?1",
            params![room_id, wait],
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreError};

    #[test]
    fn numbers_and_pins_are_unique_and_optional() {
        let store = Store::open_in_memory().expect("store");
        store
            .write(|tx| {
                let a = tx.insert_room("aaaaaaaa", "A", 2, 1)?;
                let b = tx.insert_room("bbbbbbbb", "B", 2, 1)?;
                let row = tx.room_dialin(a)?.expect("room");
                assert_eq!((row.number, row.pin, row.wait_for_call), (None, None, true));
                tx.set_room_dialin_number(a, Some("+4930123456"))?;
                tx.set_room_dialin_pin(a, "12345678")?;
                tx.set_room_dialin_wait(a, false)?;
                assert!(tx.set_room_dialin_number(b, Some("+4930123456")).is_err());
                assert!(tx.set_room_dialin_pin(b, "12345678").is_err());
                let found = tx.room_by_dialin_number("+4930123456")?.expect("by number");
                assert_eq!(found.room_id, a);
                assert!(!found.wait_for_call);
                assert_eq!(
                    tx.room_by_dialin_pin("12345678")?.map(|r| r.token),
                    Some("aaaaaaaa".into())
                );
                tx.set_room_dialin_number(a, None)?;
                tx.set_room_dialin_number(b, Some("+4930123456"))?;
                assert_eq!(
                    tx.room_dialin_by_token("bbbbbbbb")?.and_then(|r| r.number),
                    Some("+4930123456".into())
                );
                Ok::<_, StoreError>(())
            })
            .expect("store operations");
    }
}
