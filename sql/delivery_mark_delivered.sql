-- mark.delivered: a client acknowledged a notification. Keeps the first
-- delivered_at; sent_at stays null when herald never pushed it (the client
-- found it through notifications.list). No row: not in the user's inbox.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 notification id
with target as (
  select n.id from herald.inbox($1, $2, $3) n where n.id = $4
)
insert into herald.notification_deliveries
  (notification_id, user_id, channel, status, delivered_at)
select id, $1, 'IN_APP', 'DELIVERED', now() from target
on conflict (notification_id, user_id, channel) do update
   set status = 'DELIVERED',
       delivered_at = coalesce(herald.notification_deliveries.delivered_at, excluded.delivered_at)
returning notification_id
