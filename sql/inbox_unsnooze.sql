-- mark.unsnoozed: ends a snooze early (the V7 trigger logs it, with the
-- notification to show again). No row when the notification is not in the
-- user's inbox (or is gone); one row, snoozed or not, otherwise.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 notification id
with target as (
  select n.id from herald.inbox($1, $2, $3) n
   where n.id = $4
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
), deleted as (
  delete from herald.notification_snoozed z
   using target
   where z.notification_id = target.id and z.user_id = $1
  returning z.notification_id
)
select id, (select count(*) from deleted) as deleted from target
