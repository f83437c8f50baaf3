DROP TABLE notifications;
DROP TABLE webhook_deliveries;
DROP TABLE webhooks;
DROP INDEX outbox_undispatched;
ALTER TABLE outbox DROP COLUMN republish_after;
ALTER TABLE outbox DROP COLUMN publish_count;
ALTER TABLE outbox DROP COLUMN dispatched_at;
