-- mark.delivered: a client acknowledged a notification. Keeps the first
-- delivered_at; sent_at stays null when herald never pushed it (the client
-- found it through notifications.list). No row: not in the user's inbox,
-- or retracted or expired (gone for the user, as in mark.read).
-- The notification and the user are locked FOR KEY SHARE, as a foreign key
-- check would (see migration V4).
-- $1 user_id, $2 sector_id, $3 is_admin, $4 notification id
with target as (
  select n.id from herald.notifications n
   where n.id = $4
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
     and n.id in (select i.id from herald.inbox($1, $2, $3) i where i.id = $4)
     and exists (select from herald.users u where u.id = $1 for key share)
     for key share of n
)
insert into herald.notification_deliveries
  (notification_id, user_id, channel, status, delivered_at)
select id, $1, 'IN_APP', 'DELIVERED', now() from target
on conflict (notification_id, user_id, channel) do update
   set status = 'DELIVERED',
       delivered_at = coalesce(herald.notification_deliveries.delivered_at, excluded.delivered_at)
returning notification_id
