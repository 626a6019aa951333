-- How many notifications a user has not read: the number behind every
-- notification:count. Expired and retracted ones do not count, nor those
-- snoozed or of a kind muted for IN_APP (herald.visibility).
-- $1 user_id, $2 sector_id, $3 is_admin
select count(*)
  from herald.inbox($1, $2, $3) n
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and not exists (select from herald.notification_seen s
                    where s.notification_id = n.id and s.user_id = $1)
   and (select shown from herald.visibility(n.id, $1, n.kind, n.importance))
