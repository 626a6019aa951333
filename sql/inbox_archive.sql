-- mark.archived: archives a notification for a user (the V7 trigger also
-- marks it read and ends a snooze of it). Archiving twice answers the first
-- time. No row when it is not in the user's inbox, or was retracted or
-- expired, as for mark.read.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 notification id
with target as (
  select n.id from herald.inbox($1, $2, $3) n
   where n.id = $4
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
), inserted as (
  insert into herald.notification_archived (notification_id, user_id)
  select id, $1 from target
  on conflict (notification_id, user_id) do nothing
  returning archived_at
)
select herald.rfc3339(coalesce(
         (select archived_at from inserted),
         (select archived_at from herald.notification_archived
           where notification_id = $4 and user_id = $1))) as archived_at
  from target
