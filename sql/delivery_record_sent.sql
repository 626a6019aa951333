-- The delivery writer's batch, staged by COPY (delivery_copy_batch.sql) in
-- the same transaction: (notification, user, time) triples that herald
-- pushed to at least one socket. Another instance may have recorded the same
-- pair already, and a later DELIVERED must not be downgraded, so existing
-- rows win. Rows whose notification or user was deleted meanwhile are
-- skipped rather than failing the batch; delivery_lock_parents.sql, run
-- just before, keeps deletes from slipping between this check and the
-- commit (migration V10).
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at)
select b.notification_id, b.user_id, 'IN_APP', 'SENT', b.sent_at
  from pg_temp.herald_delivery_batch b
 where exists (select from herald.notifications n where n.id = b.notification_id)
   and exists (select from herald.users u where u.id = b.user_id)
on conflict (notification_id, user_id, channel) do nothing
