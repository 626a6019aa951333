-- One page of a user's notifications, newest first, with when they read
-- each. Keyset pagination on (created_at, id): the cursor is the last row of
-- the previous page, its created_at in microseconds since the epoch.
-- Retracted and expired notifications are left out, as from every push.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 cursor microseconds (null: first
-- page), $5 cursor id, $6 unread only, $7 rows to return
select n.id, n.audience, n.kind, n.importance, n.title, n.message, n.action_url, n.data,
       herald.rfc3339(n.created_at) as created_at,
       herald.rfc3339(n.expires_at) as expires_at,
       (extract(epoch from n.created_at) * 1000000)::bigint as cursor_us,
       herald.rfc3339(s.seen_at) as read_at
  from herald.inbox($1, $2, $3) n
  left join herald.notification_seen s on s.notification_id = n.id and s.user_id = $1
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and ($4::bigint is null
        or (n.created_at, n.id) < ('epoch'::timestamptz + $4 * interval '1 microsecond', $5))
   and (not $6 or s.seen_at is null)
 order by n.created_at desc, n.id desc
 limit $7
