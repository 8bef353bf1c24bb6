CREATE TABLE "chroma_lb_apply_sends" (
	"lock_key" text NOT NULL,
	"xid" text NOT NULL,
	"node_id" text NOT NULL,
	"until" timestamp with time zone NOT NULL,
	CONSTRAINT "chroma_lb_apply_sends_lock_key_xid_pk" PRIMARY KEY("lock_key","xid")
);
--> statement-breakpoint
CREATE INDEX "chroma_lb_apply_sends_until_idx" ON "chroma_lb_apply_sends" USING btree ("until");