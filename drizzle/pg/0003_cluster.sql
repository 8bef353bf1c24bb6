-- The tables the nodes of a cluster share. IF NOT EXISTS: chroma-lb builds before this
-- migration made them at start (src/cluster/schema.ts), with the same columns.
CREATE TABLE IF NOT EXISTS "chroma_lb_alerts_posted" (
	"event" text NOT NULL,
	"instance" text NOT NULL,
	"collection" text NOT NULL,
	"status" text NOT NULL,
	"node_id" text NOT NULL,
	"posted_at" timestamp with time zone NOT NULL,
	CONSTRAINT "chroma_lb_alerts_posted_event_instance_collection_pk" PRIMARY KEY("event","instance","collection")
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "chroma_lb_jobs" (
	"kind" text NOT NULL,
	"scope" text NOT NULL,
	"node_id" text NOT NULL,
	"state" text NOT NULL,
	"progress" jsonb,
	"started_at" timestamp with time zone NOT NULL,
	"heartbeat_at" timestamp with time zone NOT NULL,
	"finished_at" timestamp with time zone,
	CONSTRAINT "chroma_lb_jobs_kind_scope_pk" PRIMARY KEY("kind","scope"),
	CONSTRAINT "chroma_lb_jobs_state" CHECK ("chroma_lb_jobs"."state" IN ('running', 'done', 'failed'))
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "chroma_lb_nodes" (
	"id" text PRIMARY KEY NOT NULL,
	"address" text NOT NULL,
	"incarnation" uuid NOT NULL,
	"started_at" timestamp with time zone NOT NULL,
	"last_heartbeat_at" timestamp with time zone NOT NULL,
	CONSTRAINT "chroma_lb_nodes_id_length" CHECK (char_length("chroma_lb_nodes"."id") BETWEEN 1 AND 128)
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "chroma_lb_switches" (
	"instance" text NOT NULL,
	"kind" text NOT NULL,
	"until" timestamp with time zone,
	"set_by" text NOT NULL,
	"set_at" timestamp with time zone NOT NULL,
	CONSTRAINT "chroma_lb_switches_instance_kind_pk" PRIMARY KEY("instance","kind"),
	CONSTRAINT "chroma_lb_switches_kind" CHECK ("chroma_lb_switches"."kind" IN ('maintenance', 'simulation'))
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "chroma_lb_replay_leases" (
	"instance" text NOT NULL,
	"collection" text NOT NULL,
	"node_id" text NOT NULL,
	"token" bigint NOT NULL,
	"acquired_at" timestamp with time zone NOT NULL,
	"expires_at" timestamp with time zone NOT NULL,
	CONSTRAINT "chroma_lb_replay_leases_instance_collection_pk" PRIMARY KEY("instance","collection")
);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "chroma_lb_replay_leases_node_idx" ON "chroma_lb_replay_leases" USING btree ("node_id");