-- A user's unread notifications as ids, with when each expires and what
-- views select them by (kind, importance): the set herald keeps in memory
-- and moves with each event to know their count without asking again
-- (src/unread.rs). At most $4 rows, one more than it
-- keeps, so that a user past the limit is told apart from one at it.
-- Only what shows: snoozed and muted (IN_APP) ones are not counted.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 limit
select n.id, n.expires_at, n.kind, n.importance
  from herald.inbox($1, $2, $3) n
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and not exists (select from herald.notification_seen s
                    where s.notification_id = n.id and s.user_id = $1)
   and (select shown from herald.visibility(n.id, $1, n.kind, n.importance))
 limit $4
