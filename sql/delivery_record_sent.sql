-- The delivery writer's batch, staged by COPY (delivery_copy_batch.sql) in
-- the same transaction: (notification, user, time) triples that herald
-- pushed to at least one socket, whose notification and user were found
-- (delivery_live_notifications.sql, delivery_live_users.sql) after the lock
-- that keeps deletes out until the commit (delivery_lock_parents.sql,
-- migration V10). Another instance may have recorded the same pair already,
-- and a later DELIVERED must not be downgraded, so existing rows win.
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at)
select b.notification_id, b.user_id, 'IN_APP', 'SENT', b.sent_at
  from pg_temp.herald_delivery_batch b
on conflict (notification_id, user_id, channel) do nothing
