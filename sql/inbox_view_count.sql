-- A watched view's count for a user herald does not keep in memory: what
-- shows (unread, unexpired, unretracted, not snoozed, not muted for IN_APP)
-- and matches the view's filters.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 kind patterns (null: any),
-- $5 importance levels (null: any)
select count(*)
  from herald.inbox($1, $2, $3) n
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and not exists (select from herald.notification_seen s
                    where s.notification_id = n.id and s.user_id = $1)
   and (select shown from herald.visibility(n.id, $1, n.kind, n.importance))
   and herald.kind_matches(n.kind, $4)
   and ($5::text[] is null or n.importance = any ($5))
