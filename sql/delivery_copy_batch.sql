-- The delivery writer's batch, (notification, user, time) triples in
-- PostgreSQL's binary COPY format, into the session's staging table
-- (delivery_batch_staging.sql).
copy pg_temp.herald_delivery_batch (notification_id, user_id, sent_at) from stdin (format binary)
