-- mark.all_read: reads every unread, unexpired, unretracted notification in
-- a user's inbox; the affected row count is how many became read.
-- $1 user_id, $2 sector_id, $3 is_admin
insert into herald.notification_seen (notification_id, user_id)
select n.id, $1
  from herald.inbox($1, $2, $3) n
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and not exists (select from herald.notification_seen s
                    where s.notification_id = n.id and s.user_id = $1)
on conflict (notification_id, user_id) do nothing
