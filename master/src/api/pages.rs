//! Paging and filters of the list routes: `limit` (1 to [`MAX_PAGE`], the default) and
//! `after`, a name for the lists keyed by name (agents, tokens, workflows: only names above it,
//! in name order) or an id for those keyed by id (tasks, orders, schedules: only ids above it),
//! and a state filter; checked at the edge so a bad query is a 400 or 422, never a large answer.

use axum::extract::Query;
use axum::extract::rejection::QueryRejection;

use super::{ApiError, MAX_PAGE};
use crate::model::AgentPresence;
use crate::store::Page;

/// One page of a list in name order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamePage {
    pub after: Option<String>,
    pub limit: u32,
}

impl NamePage {
    /// The page of `items` (any order): sorted by `key`, those above `after`, at most `limit`.
    pub fn take<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> &str) -> Vec<T> {
        items.sort_by(|a, b| key(a).cmp(key(b)));
        items
            .into_iter()
            .filter(|i| self.after.as_deref().is_none_or(|after| key(i) > after))
            .take(self.limit as usize)
            .collect()
    }
}

/// `GET /api/agents` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct AgentsQuery {
    /// At most this many (1 to 10000, the default).
    limit: Option<u32>,
    /// Only agent ids above this one.
    after: Option<String>,
    /// Only agents with this presence (`unknown`, `online`, `lost`, `stopped`).
    presence: Option<String>,
    /// Only agents that may (or may not) take new tasks.
    available: Option<bool>,
}

/// `GET /api/tokens` and `GET /api/workflows` query.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct NamesQuery {
    /// At most this many (1 to 10000, the default).
    limit: Option<u32>,
    /// Only names above this one.
    after: Option<String>,
}

/// `GET /api/schedules` query: a list keyed by id, without filters.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(super) struct IdsQuery {
    /// At most this many (1 to 10000, the default).
    limit: Option<u32>,
    /// Only ids above this one.
    after: Option<u64>,
}

impl IdsQuery {
    pub(super) fn checked(self) -> Result<Page, ApiError> {
        id_page(self.limit, self.after)
    }
}

/// The page asked for, or 422.
pub(super) fn limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(MAX_PAGE);
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::new(
            422,
            format!("limit is {limit}, outside 1..={MAX_PAGE}"),
        ))
    }
}

/// A query that does not parse is a 400.
pub(super) fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| ApiError::new(400, format!("bad query: {}", e.body_text())))
}

pub(super) type AgentFilter = (NamePage, Option<AgentPresence>, Option<bool>);

impl AgentsQuery {
    pub(super) fn checked(self) -> Result<AgentFilter, ApiError> {
        let presence = match self.presence.as_deref() {
            None => None,
            Some(text) => Some(AgentPresence::parse(text).ok_or_else(|| {
                ApiError::new(422, format!("presence '{text}' is not an agent presence"))
            })?),
        };
        let page = NamePage {
            after: self.after,
            limit: limit(self.limit)?,
        };
        Ok((page, presence, self.available))
    }
}

impl NamesQuery {
    pub(super) fn checked(self) -> Result<NamePage, ApiError> {
        Ok(NamePage {
            after: self.after,
            limit: limit(self.limit)?,
        })
    }
}

/// A page of a list keyed by id: `limit` as [`limit`], `after` a storable id; or 422.
pub(super) fn id_page(limit: Option<u32>, after: Option<u64>) -> Result<Page, ApiError> {
    if let Some(after) = after {
        crate::limits::storable("after", after).map_err(|e| ApiError::new(422, e.reason))?;
    }
    Ok(Page {
        after,
        limit: self::limit(limit)?,
    })
}

/// A `state` filter parsed by `parse` (`what` names the kind of state), or 422.
pub(super) fn state<T>(
    text: Option<&str>,
    what: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    text.map(|t| parse(t).ok_or_else(|| ApiError::new(422, format!("state '{t}' is not {what}"))))
        .transpose()
}
