-- archive.all_read: archives every read, live, not yet archived
-- notification in a user's inbox; the row count is how many.
-- $1 user_id, $2 sector_id, $3 is_admin
insert into herald.notification_archived (notification_id, user_id)
select n.id, $1
  from herald.inbox($1, $2, $3) n
  join herald.notification_seen s on s.notification_id = n.id and s.user_id = $1
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and not exists (select from herald.notification_archived a
                    where a.notification_id = n.id and a.user_id = $1)
on conflict (notification_id, user_id) do nothing
