-- The delivery writer's staging table, once per session: its batch arrives
-- by binary COPY, which cannot skip conflicts or check parents itself, so
-- delivery_record_sent.sql moves it into herald.notification_deliveries in
-- the same transaction. Temporary, so each connection has its own; `on
-- commit delete rows` empties it whether the transaction commits or not.
-- Created in every batch's transaction (if not there yet) rather than on
-- connect: behind a transaction-pooling pgbouncer, consecutive transactions
-- may run on different sessions.
create temp table if not exists herald_delivery_batch (
  notification_id uuid not null,
  user_id         uuid not null,
  sent_at         timestamptz not null
) on commit delete rows
