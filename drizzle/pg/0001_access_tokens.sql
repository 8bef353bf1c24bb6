CREATE TABLE "chroma_lb_access_tokens" (
	"id" text PRIMARY KEY NOT NULL,
	"name" text NOT NULL,
	"role" text NOT NULL,
	"tenants" text NOT NULL,
	"databases" text NOT NULL,
	"hash" text NOT NULL,
	"created_at_ms" bigint NOT NULL,
	"revoked_at_ms" bigint
);
--> statement-breakpoint
CREATE UNIQUE INDEX "chroma_lb_access_tokens_hash" ON "chroma_lb_access_tokens" USING btree ("hash");