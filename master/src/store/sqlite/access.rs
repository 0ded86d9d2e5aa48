//! API tokens and the audit trail in SQLite.

use rusqlite::{Row, params};

use super::{SqliteStore, check_id};
use crate::model::{ApiToken, AuditEntry, Role};
use crate::store::{Result, StoreError};

pub(super) const TOKEN_COLUMNS: &str = "name, role, hash, created_ms, created_by, revoked_ms";

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

pub(super) fn token_row(r: &Row<'_>) -> rusqlite::Result<Result<ApiToken>> {
    let role: String = r.get(1)?;
    let Some(role) = Role::parse(&role) else {
        return Ok(Err(StoreError::Corrupt(format!("token role '{role}'"))));
    };
    Ok(Ok(ApiToken {
        name: r.get(0)?,
        role,
        hash: r.get(2)?,
        created_ms: r.get::<_, i64>(3)? as u64,
        created_by: r.get(4)?,
        revoked_ms: r.get::<_, Option<i64>>(5)?.map(|v| v as u64),
    }))
}

pub(super) fn audit_row(r: &Row<'_>) -> rusqlite::Result<AuditEntry> {
    Ok(AuditEntry {
        at_ms: r.get::<_, i64>(0)? as u64,
        who: r.get(1)?,
        action: r.get(2)?,
        subject: r.get(3)?,
    })
}
