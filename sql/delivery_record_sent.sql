-- The delivery writer's batch: (notification, user, time) triples that
-- herald pushed to at least one socket, whose notification and user were
-- found (delivery_live_notifications.sql, delivery_live_users.sql) after
-- the lock that keeps deletes out until the commit
-- (delivery_lock_parents.sql, migration V10), as three arrays. Another
-- instance may have recorded a pair already, and a client's DELIVERED may
-- have landed before herald's SENT; as written here a recorded pair fails
-- the whole insert (a unique violation), and the writer runs it again with
-- `on conflict (notification_id, user_id, channel) do nothing` appended
-- (src/db/deliveries.rs), which keeps the existing row.
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at)
select b.notification_id, b.user_id, 'IN_APP', 'SENT', b.sent_at
  from unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) as b (notification_id, user_id, sent_at)
