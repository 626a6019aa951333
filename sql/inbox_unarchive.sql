-- mark.unarchived: takes a notification out of a user's archive; it stays
-- read. No row when it is not in the user's inbox (or is gone); one row,
-- whether or not it was archived, otherwise.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 notification id
with target as (
  select n.id from herald.inbox($1, $2, $3) n
   where n.id = $4
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
), deleted as (
  delete from herald.notification_archived a
   using target
   where a.notification_id = target.id and a.user_id = $1
  returning a.notification_id
)
select id, (select count(*) from deleted) as deleted from target
