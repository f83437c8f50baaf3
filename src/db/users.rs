//! Queries on `users`. Insert form and read model are separate types.

use chrono::NaiveDateTime;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use super::schema::users;
use super::DbConn;
use crate::with_conn;

#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = users)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub role: String,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

#[derive(Debug, Insertable)]
#[diesel(table_name = users)]
pub struct NewUserRow<'a> {
    pub id: &'a str,
    pub email: &'a str,
    pub name: &'a str,
    pub password_hash: &'a str,
    pub role: &'a str,
    pub created_at: NaiveDateTime,
    pub updated_at: NaiveDateTime,
}

pub async fn insert(conn: &mut DbConn, row: &NewUserRow<'_>) -> QueryResult<UserRow> {
    with_conn!(conn, |c| {
        diesel::insert_into(users::table)
            .values(row)
            .returning(UserRow::as_returning())
            .get_result(c)
            .await
    })
}

pub async fn find_by_id(conn: &mut DbConn, id: &str) -> QueryResult<Option<UserRow>> {
    with_conn!(conn, |c| {
        users::table
            .find(id)
            .select(UserRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

pub async fn find_by_email(conn: &mut DbConn, email: &str) -> QueryResult<Option<UserRow>> {
    with_conn!(conn, |c| {
        users::table
            .filter(users::email.eq(email))
            .select(UserRow::as_select())
            .first(c)
            .await
            .optional()
    })
}

/// Users ordered by id (UUIDv7, so creation order), starting after `after`.
pub async fn list(conn: &mut DbConn, after: Option<&str>, limit: i64) -> QueryResult<Vec<UserRow>> {
    with_conn!(conn, |c| {
        let mut query = users::table
            .select(UserRow::as_select())
            .order(users::id.asc())
            .limit(limit)
            .into_boxed();
        if let Some(after) = after {
            query = query.filter(users::id.gt(after));
        }
        query.load(c).await
    })
}
