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
        dispatched_at -> Nullable<Timestamp>,
        publish_count -> Integer,
        republish_after -> Nullable<Timestamp>,
    }
}

diesel::table! {
    webhooks (id) {
        id -> Text,
        url -> Text,
        events -> Text,
        secret -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    webhook_deliveries (id) {
        id -> Text,
        webhook_id -> Text,
        event_id -> Text,
        event_type -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        last_status_code -> Nullable<Integer>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        delivered_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    notifications (id) {
        id -> Text,
        event_id -> Text,
        kind -> Text,
        order_id -> Text,
        recipient -> Text,
        status -> Text,
        attempts -> Integer,
        next_attempt_at -> Nullable<Timestamp>,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        last_error -> Nullable<Text>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        sent_at -> Nullable<Timestamp>,
    }
}

diesel::joinable!(webhook_deliveries -> webhooks (webhook_id));
diesel::joinable!(webhook_deliveries -> outbox (event_id));
diesel::joinable!(notifications -> outbox (event_id));

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

diesel::table! {
    carts (id) {
        id -> Text,
        user_id -> Text,
        status -> Text,
        currency -> Text,
        order_id -> Nullable<Text>,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    cart_items (cart_id, sku) {
        cart_id -> Text,
        sku -> Text,
        name -> Text,
        quantity -> BigInt,
        unit_price -> BigInt,
    }
}

diesel::table! {
    orders (id) {
        id -> Text,
        user_id -> Text,
        cart_id -> Nullable<Text>,
        status -> Text,
        currency -> Text,
        total -> BigInt,
        payment_provider -> Text,
        payment_token -> Text,
        payment_ref -> Nullable<Text>,
        capture_mode -> Text,
        payment_status -> Text,
        authorized -> BigInt,
        captured -> BigInt,
        refunded -> BigInt,
        stock_state -> Text,
        cancel_requested -> Bool,
        capture_requested -> Bool,
        carrier -> Nullable<Text>,
        tracking_number -> Nullable<Text>,
        version -> BigInt,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    order_items (order_id, sku) {
        order_id -> Text,
        sku -> Text,
        name -> Text,
        quantity -> BigInt,
        unit_price -> BigInt,
        line_total -> BigInt,
        restocked -> BigInt,
    }
}

diesel::table! {
    payments (id) {
        id -> Text,
        order_id -> Text,
        operation -> Text,
        idempotency_key -> Text,
        amount -> BigInt,
        status -> Text,
        provider_ref -> Nullable<Text>,
        created_at -> Timestamp,
    }
}

diesel::table! {
    refunds (id) {
        id -> Text,
        order_id -> Text,
        amount -> BigInt,
        reason -> Nullable<Text>,
        status -> Text,
        restock -> Text,
        restock_done -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    order_events (id) {
        id -> Text,
        order_id -> Text,
        event_type -> Text,
        from_status -> Nullable<Text>,
        to_status -> Text,
        actor -> Text,
        data -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    sagas (order_id) {
        order_id -> Text,
        state -> Text,
        current_step -> Nullable<Text>,
        parked -> Bool,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        started_at -> Timestamp,
        updated_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    saga_steps (id) {
        id -> Text,
        order_id -> Text,
        name -> Text,
        kind -> Text,
        ref_id -> Text,
        status -> Text,
        attempt -> Integer,
        error -> Nullable<Text>,
        started_at -> Timestamp,
        finished_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    idempotency_keys (user_id, key) {
        user_id -> Text,
        key -> Text,
        fingerprint -> Text,
        state -> Text,
        token -> Text,
        locked_until -> Timestamp,
        resource_type -> Nullable<Text>,
        resource_id -> Nullable<Text>,
        response_status -> Nullable<Integer>,
        response_headers -> Nullable<Text>,
        response_body -> Nullable<Text>,
        created_at -> Timestamp,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    write_batches (id) {
        id -> Text,
        committed_at -> Timestamp,
    }
}

diesel::joinable!(cart_items -> carts (cart_id));
diesel::joinable!(order_items -> orders (order_id));
diesel::joinable!(sagas -> orders (order_id));

diesel::allow_tables_to_appear_in_same_query!(
    carts,
    cart_items,
    orders,
    order_items,
    payments,
    refunds,
    order_events,
    sagas,
    saga_steps,
    events,
    idempotency_keys,
    products,
    inventory,
    reservations,
    inventory_movements,
    outbox,
    webhooks,
    webhook_deliveries,
    notifications,
    users,
    write_batches
);
