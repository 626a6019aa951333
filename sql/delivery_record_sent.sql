-- The delivery writer's batch, staged by COPY (delivery_copy_batch.sql) in
-- the same transaction: (notification, user, time) triples that herald
-- pushed to at least one socket. Another instance may have recorded the same
-- pair already, and a later DELIVERED must not be downgraded, so existing
-- rows win. Rows whose notification or user was deleted meanwhile are
-- skipped rather than failing the batch; delivery_lock_parents.sql, run
-- just before, keeps deletes from slipping between this check and the
-- commit (migration V10).
--
-- Each check is an index probe per row, whatever the statistics say:
-- `offset 0` keeps PostgreSQL from turning the EXISTS into a join. As a
-- join, a plan made while the tables were small or unanalyzed (a new
-- database, or the first minute of a busy one) hashes every notification
-- and every user for each batch: 60 ms for 500 rows on 250,000
-- notifications, growing with the table, against 13 ms probing.
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at)
select b.notification_id, b.user_id, 'IN_APP', 'SENT', b.sent_at
  from pg_temp.herald_delivery_batch b
 where exists (select from herald.notifications n where n.id = b.notification_id offset 0)
   and exists (select from herald.users u where u.id = b.user_id offset 0)
on conflict (notification_id, user_id, channel) do nothing
