-- The delivery writer's batch, staged by COPY (delivery_copy_batch.sql) in
-- the same transaction: (notification, user, time) triples that herald
-- pushed to at least one socket. Another instance may have recorded the same
-- pair already, and a later DELIVERED must not be downgraded, so existing
-- rows win. Rows whose notification or user was deleted meanwhile are
-- skipped rather than failing the batch.
--
-- The referenced rows are locked FOR KEY SHARE once per statement (what a
-- foreign key check does per row; see migration V4): a delete running
-- alongside waits for this batch, or this batch waits for it and skips the
-- rows it removed. The staging table is read three times rather than
-- materialized once: it is local to the session and small, and reading it
-- again measured cheaper than copying it into a CTE.
with notifications as materialized (
  select n.id from herald.notifications n
   where n.id in (select notification_id from pg_temp.herald_delivery_batch)
     for key share
),
users as materialized (
  select u.id from herald.users u
   where u.id in (select user_id from pg_temp.herald_delivery_batch)
     for key share
)
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at)
select b.notification_id, b.user_id, 'IN_APP', 'SENT', b.sent_at
  from pg_temp.herald_delivery_batch b
  join notifications n on n.id = b.notification_id
  join users u on u.id = b.user_id
on conflict (notification_id, user_id, channel) do nothing
