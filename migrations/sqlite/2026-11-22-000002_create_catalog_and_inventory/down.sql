DROP TABLE outbox;
DROP TABLE inventory_movements;
DROP TABLE reservations;
DROP TABLE inventory;
DROP TABLE products;
