//! API tokens and the audit trail in SQLite.

use rusqlite::params;

use super::SqliteStore;
use crate::model::{ApiToken, AuditEntry};
use crate::store::Result;
use crate::store::checks::check_id;

impl SqliteStore {
    /// Creates, replaces (same name: a new secret) or revokes a token.
    pub(super) fn put_token(&self, t: &ApiToken) -> Result<()> {
        check_id("token name", &t.name)?;
        self.conn.execute(
            "INSERT INTO api_tokens (name, role, hash, created_ms, created_by, revoked_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT(name) DO UPDATE SET role = excluded.role, hash = excluded.hash,
                 created_ms = excluded.created_ms, created_by = excluded.created_by,
                 revoked_ms = excluded.revoked_ms",
            params![
                t.name,
                t.role.as_str(),
                t.hash,
                t.created_ms as i64,
                t.created_by,
                t.revoked_ms.map(|v| v as i64)
            ],
        )?;
        Ok(())
    }

    pub(super) fn append_audit(&self, e: &AuditEntry) -> Result<()> {
        self.conn.execute(
            "INSERT INTO audit (at_ms, who, action, subject) VALUES (?1, ?2, ?3, ?4)",
            params![e.at_ms as i64, e.who, e.action, e.subject],
        )?;
        Ok(())
    }
}
