CREATE TABLE "chroma_lb_collection_instances" (
	"collection_id" text NOT NULL,
	"instance" text NOT NULL,
	"instance_uuid" text NOT NULL,
	"updated_at_ms" bigint NOT NULL,
	CONSTRAINT "chroma_lb_collection_instances_collection_id_instance_pk" PRIMARY KEY("collection_id","instance")
);
--> statement-breakpoint
CREATE TABLE "chroma_lb_collections" (
	"id" text PRIMARY KEY NOT NULL,
	"tenant" text NOT NULL,
	"database" text NOT NULL,
	"name" text NOT NULL,
	"status" text NOT NULL,
	"created_at_ms" bigint NOT NULL,
	"updated_at_ms" bigint NOT NULL
);
