CREATE TABLE `wal_diverged` (
	`instance` text NOT NULL,
	`partition` text NOT NULL,
	`seq` integer NOT NULL,
	`op` text NOT NULL,
	`error` text NOT NULL,
	`refused_entries` integer DEFAULT 1 NOT NULL,
	`at_ms` integer NOT NULL,
	PRIMARY KEY(`instance`, `partition`)
);
