CREATE TABLE `collection_instances` (
	`collection_id` text NOT NULL,
	`instance` text NOT NULL,
	`instance_uuid` text NOT NULL,
	`updated_at_ms` integer NOT NULL,
	PRIMARY KEY(`collection_id`, `instance`)
);
--> statement-breakpoint
CREATE INDEX `collection_instances_uuid` ON `collection_instances` (`instance_uuid`);--> statement-breakpoint
CREATE INDEX `collection_instances_updated` ON `collection_instances` (`updated_at_ms`);--> statement-breakpoint
CREATE TABLE `collections` (
	`id` text PRIMARY KEY NOT NULL,
	`tenant` text NOT NULL,
	`database` text NOT NULL,
	`name` text NOT NULL,
	`status` text DEFAULT 'active' NOT NULL,
	`created_at_ms` integer NOT NULL,
	`updated_at_ms` integer NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX `collections_active_name` ON `collections` (`tenant`,`database`,`name`) WHERE status = 'active';--> statement-breakpoint
CREATE INDEX `collections_updated` ON `collections` (`updated_at_ms`);--> statement-breakpoint
CREATE TABLE `kv` (
	`key` text PRIMARY KEY NOT NULL,
	`value` text NOT NULL
);
--> statement-breakpoint
CREATE TABLE `wal_bodies` (
	`seq` integer PRIMARY KEY NOT NULL,
	`body` blob NOT NULL
);
--> statement-breakpoint
CREATE TABLE `wal_entries` (
	`seq` integer PRIMARY KEY AUTOINCREMENT NOT NULL,
	`created_at_ms` integer NOT NULL,
	`partition` text NOT NULL,
	`kind` text NOT NULL,
	`op` text NOT NULL,
	`tenant` text NOT NULL,
	`database` text NOT NULL,
	`collection_id` text,
	`name` text,
	`body_bytes` integer NOT NULL,
	`state` text NOT NULL,
	`applied_by` text
);
--> statement-breakpoint
CREATE INDEX `wal_entries_partition` ON `wal_entries` (`partition`,`seq`);--> statement-breakpoint
CREATE INDEX `wal_entries_created` ON `wal_entries` (`created_at_ms`);--> statement-breakpoint
CREATE TABLE `wal_pending` (
	`instance` text NOT NULL,
	`seq` integer NOT NULL,
	`partition` text NOT NULL,
	`kind` text NOT NULL,
	`attempts` integer DEFAULT 0 NOT NULL,
	`last_error` text,
	`last_attempt_at_ms` integer,
	PRIMARY KEY(`instance`, `seq`)
);
--> statement-breakpoint
CREATE INDEX `wal_pending_partition` ON `wal_pending` (`instance`,`partition`,`seq`);--> statement-breakpoint
CREATE INDEX `wal_pending_seq` ON `wal_pending` (`seq`);--> statement-breakpoint
CREATE INDEX `wal_pending_kind` ON `wal_pending` (`instance`,`kind`,`seq`);