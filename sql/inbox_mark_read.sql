-- mark.read: records that a user read a notification addressed to them.
-- Reading twice changes nothing and answers the first read's time. Returns
-- no row when the notification is not in the user's inbox, or was retracted
-- or expired: those are gone for the user, as from every push and list, so
-- reading one writes no receipt and no read event.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 notification id
with target as (
  select n.id from herald.inbox($1, $2, $3) n
   where n.id = $4
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
), inserted as (
  insert into herald.notification_seen (notification_id, user_id)
  select id, $1 from target
  on conflict (notification_id, user_id) do nothing
  returning seen_at
)
select herald.rfc3339(coalesce(
         (select seen_at from inserted),
         (select seen_at from herald.notification_seen
           where notification_id = $4 and user_id = $1))) as read_at
  from target
