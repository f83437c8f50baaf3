DROP TABLE write_batches;
