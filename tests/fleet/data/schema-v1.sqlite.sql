-- The fleet database as the receiver made it before schema versions (commit 8a2788a, schema 1):
-- tests/fleet/test_fleet_migrate.py loads it and migrates it.
CREATE TABLE "units" ("id" INTEGER NOT NULL PRIMARY KEY, "name" VARCHAR(64) NOT NULL, "token_hash" VARCHAR(64) NOT NULL, "created_at" REAL NOT NULL, "unit_id" VARCHAR(100), "unit_name" VARCHAR(1000), "site" VARCHAR(1000), "serial" VARCHAR(1000), "last_seen" REAL, "last_sent_at" REAL, "last_seq" INTEGER, "last_gap" REAL, "health" VARCHAR(32), "reasons" TEXT NOT NULL, "revision_id" INTEGER, "revision_sha256" VARCHAR(64), "revision_state" VARCHAR(32), "firmware" VARCHAR(100), "heartbeat_count" INTEGER NOT NULL, "events_cursor" INTEGER, "epoch" INTEGER NOT NULL, "interval_request" REAL, "interval_requested_at" REAL, "interval_requested_by" VARCHAR(200), "identify_request" INTEGER NOT NULL, "identify_requested_at" REAL, "identify_requested_by" VARCHAR(200), "identify_delivered_at" REAL);
CREATE UNIQUE INDEX "unit_name" ON "units" ("name");
CREATE UNIQUE INDEX "unit_token_hash" ON "units" ("token_hash");
CREATE TABLE "events" ("id" INTEGER NOT NULL PRIMARY KEY, "unit_id" INTEGER NOT NULL, "unit_uid" VARCHAR(100) NOT NULL, "epoch" INTEGER NOT NULL, "event_id" INTEGER NOT NULL, "at" REAL NOT NULL, "received_at" REAL NOT NULL, "kind" VARCHAR(100) NOT NULL, "severity" VARCHAR(16) NOT NULL, "source" VARCHAR(32) NOT NULL, "message" TEXT NOT NULL, FOREIGN KEY ("unit_id") REFERENCES "units" ("id") ON DELETE CASCADE);
CREATE INDEX "event_unit_id" ON "events" ("unit_id");
CREATE INDEX "event_received_at" ON "events" ("received_at");
CREATE UNIQUE INDEX "event_unit_id_unit_uid_epoch_event_id" ON "events" ("unit_id", "unit_uid", "epoch", "event_id");
CREATE TABLE "heartbeats" ("id" INTEGER NOT NULL PRIMARY KEY, "unit_id" INTEGER NOT NULL, "received_at" REAL NOT NULL, "seq" INTEGER NOT NULL, "idempotency_key" VARCHAR(200) NOT NULL, "sent_at" REAL NOT NULL, "health" VARCHAR(32) NOT NULL, "revision_id" INTEGER, "revision_state" VARCHAR(32), "firmware" VARCHAR(100), "body" TEXT NOT NULL, FOREIGN KEY ("unit_id") REFERENCES "units" ("id") ON DELETE CASCADE);
CREATE INDEX "heartbeat_unit_id" ON "heartbeats" ("unit_id");
CREATE INDEX "heartbeat_received_at" ON "heartbeats" ("received_at");
CREATE UNIQUE INDEX "heartbeat_unit_id_idempotency_key" ON "heartbeats" ("unit_id", "idempotency_key");
CREATE INDEX "heartbeat_unit_id_sent_at" ON "heartbeats" ("unit_id", "sent_at");
CREATE TABLE "login_failures" ("id" INTEGER NOT NULL PRIMARY KEY, "address" VARCHAR(64) NOT NULL, "at" REAL NOT NULL);
CREATE INDEX "loginfailure_address" ON "login_failures" ("address");
CREATE TABLE "sessions" ("sid_hash" VARCHAR(64) NOT NULL PRIMARY KEY, "created_at" REAL NOT NULL, "expires_at" REAL NOT NULL, "address" VARCHAR(64) NOT NULL);
CREATE INDEX "operatorsession_expires_at" ON "sessions" ("expires_at");
CREATE TABLE "settings" ("key" VARCHAR(64) NOT NULL PRIMARY KEY, "value" TEXT NOT NULL);
