//! Who may use the API and what they did: API tokens with their roles, and the audit trail of
//! every change made through the API.

use serde::{Deserialize, Serialize};

text_enum! {
    /// What a token may do; each role includes the ones below it (the order of the variants).
    #[derive(PartialOrd, Ord)]
    Role {
        /// Reads everything but secrets.
        Viewer = "viewer",
        /// Submits and kills tasks.
        Operator = "operator",
        /// Keys, provisioning, clusters, profiles, tokens.
        Admin = "admin",
    }
}

/// An API token as stored and listed: never the secret itself, only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ApiToken {
    pub name: String,
    pub role: Role,
    /// Lowercase hex of the secret's hash; not shown in listings.
    #[serde(skip_serializing, default)]
    pub hash: String,
    pub created_ms: u64,
    /// The token that created this one (`first start` for the first admin token).
    pub created_by: String,
    /// When it was revoked; a revoked token is refused at once.
    pub revoked_ms: Option<u64>,
}

/// One change made through the API: who (the token's name), what, to which subject
/// (`task/7`, `cluster/edge`, `agent/pi-1`, `token/ci`), when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub at_ms: u64,
    pub who: String,
    pub action: String,
    pub subject: String,
}
