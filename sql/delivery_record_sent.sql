-- The delivery writer's batch: (notification, user, time) triples that
-- herald pushed to at least one socket. Another instance may have recorded
-- the same pair already, and a later DELIVERED must not be downgraded, so
-- existing rows win. Rows whose notification or user was deleted meanwhile
-- are skipped rather than failing the batch.
-- $1 notification ids, $2 user ids, $3 sent times
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at)
select x.notification_id, x.user_id, 'IN_APP', 'SENT', x.sent_at
  from unnest($1::uuid[], $2::uuid[], $3::timestamptz[]) as x(notification_id, user_id, sent_at)
 where exists (select from herald.notifications n where n.id = x.notification_id)
   and exists (select from herald.users u where u.id = x.user_id)
on conflict (notification_id, user_id, channel) do nothing
