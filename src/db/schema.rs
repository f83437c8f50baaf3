//! The one schema both backends share. Column types are chosen to mean the
//! same on PostgreSQL and SQLite (TEXT ids, TIMESTAMP in UTC, BIGINT money).
//! Both migration sets must produce exactly these tables.

diesel::table! {
    users (id) {
        id -> Text,
        email -> Text,
        name -> Text,
        password_hash -> Text,
        role -> Text,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}
