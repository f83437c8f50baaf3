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

diesel::table! {
    products (sku) {
        sku -> Text,
        name -> Text,
        description -> Nullable<Text>,
        price -> BigInt,
        currency -> Text,
        active -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    inventory (sku) {
        sku -> Text,
        on_hand -> BigInt,
        reserved -> BigInt,
        version -> BigInt,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    reservations (id) {
        id -> Text,
        sku -> Text,
        order_id -> Text,
        quantity -> BigInt,
        expires_at -> Timestamp,
        created_at -> Timestamp,
    }
}

diesel::table! {
    inventory_movements (id) {
        id -> Text,
        sku -> Text,
        kind -> Text,
        on_hand_delta -> BigInt,
        reserved_delta -> BigInt,
        order_id -> Nullable<Text>,
        note -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    outbox (id) {
        id -> Text,
        event_type -> Text,
        aggregate_id -> Text,
        payload -> Text,
        created_at -> Timestamp,
        published_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(inventory -> products (sku));
diesel::joinable!(reservations -> inventory (sku));
diesel::joinable!(inventory_movements -> inventory (sku));

diesel::table! {
    events (id) {
        id -> Text,
        source -> Text,
        external_id -> Nullable<Text>,
        name -> Text,
        user_id -> Nullable<Text>,
        properties -> Text,
        occurred_at -> Timestamp,
        received_at -> Timestamp,
    }
}

diesel::allow_tables_to_appear_in_same_query!(
    events,
    products,
    inventory,
    reservations,
    inventory_movements,
    outbox,
    users
);
