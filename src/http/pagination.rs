//! Cursor pagination shared by every list: `?limit=` (1..=200, default 50)
//! and an opaque `?cursor=`; bodies are `{"items": [...], "next_cursor": ...}`.

use serde::{Deserialize, Serialize};

use super::errors::ApiError;

pub const DEFAULT_PAGE_SIZE: u32 = 50;
pub const MAX_PAGE_SIZE: u32 = 200;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `null` when there is none.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// `items` were fetched with one extra row (see [`PageQuery::fetch_limit`]);
    /// the extra row, if present, says another page exists.
    pub fn from_overfetch(
        mut items: Vec<T>,
        limit: u32,
        cursor_of: impl Fn(&T) -> String,
    ) -> Page<T> {
        let next_cursor = if items.len() > limit as usize {
            items.truncate(limit as usize);
            items.last().map(cursor_of)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// Page size, 1..=200 (default 50).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

impl PageQuery {
    pub fn new(limit: Option<u32>, cursor: Option<String>) -> PageQuery {
        PageQuery { limit, cursor }
    }

    pub fn limit(&self) -> Result<u32, ApiError> {
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(ApiError::InvalidQuery(format!(
                "limit must be between 1 and {MAX_PAGE_SIZE}"
            )));
        }
        Ok(limit)
    }

    /// Rows to fetch: one more than the page, to know if another follows.
    pub fn fetch_limit(&self) -> Result<i64, ApiError> {
        Ok(i64::from(self.limit()?) + 1)
    }

    /// The cursor parsed by `parse`; an unparseable one is 400 `invalid_query`.
    pub fn cursor<T, E>(
        &self,
        parse: impl Fn(&str) -> Result<T, E>,
    ) -> Result<Option<T>, ApiError> {
        self.cursor
            .as_deref()
            .map(|c| parse(c).map_err(|_| ApiError::InvalidQuery("cursor is not valid".to_owned())))
            .transpose()
    }
}
