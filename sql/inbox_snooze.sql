-- mark.snoozed: hides a notification from a user until $5; snoozing again
-- moves until. The V7 trigger refuses an until that is not in the future
-- or beyond 90 days, and a read notification, by named constraints. No row
-- when it is not in the user's inbox, or was retracted or expired.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 notification id, $5 until
with target as (
  select n.id from herald.inbox($1, $2, $3) n
   where n.id = $4
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
)
insert into herald.notification_snoozed (notification_id, user_id, until)
select id, $1, $5 from target
on conflict (notification_id, user_id) do update set until = excluded.until
returning herald.rfc3339(until) as until
