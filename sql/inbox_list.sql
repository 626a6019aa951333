-- One page of a user's notifications, newest first, with when they read,
-- archived and snoozed each and whether they mute its kind in the inbox.
-- Keyset pagination on (created_at, id): the cursor is the last row of the
-- previous page, its created_at in microseconds since the epoch.
-- Retracted and expired notifications are left out, as from every push.
-- The shelf ($8) picks what is listed: 'inbox' leaves archived and snoozed
-- notifications out, 'archived' and 'snoozed' list only those.
-- $1 user_id, $2 sector_id, $3 is_admin, $4 cursor microseconds (null: first
-- page), $5 cursor id, $6 unread only, $7 rows to return, $8 shelf,
-- $9 kind patterns (null: any), $10 importance levels (null: any)
select n.id, n.audience, n.kind, n.importance, n.title, n.message, n.action_url, n.data,
       herald.rfc3339(n.created_at) as created_at,
       herald.rfc3339(n.expires_at) as expires_at,
       (extract(epoch from n.created_at) * 1000000)::bigint as cursor_us,
       herald.rfc3339(s.seen_at) as read_at,
       herald.rfc3339(a.archived_at) as archived_at,
       herald.rfc3339(z.until) as snoozed_until,
       not (select enabled from herald.kind_setting($1, n.kind, n.importance, 'IN_APP')) as muted
  from herald.inbox($1, $2, $3) n
  left join herald.notification_seen s on s.notification_id = n.id and s.user_id = $1
  left join herald.notification_archived a on a.notification_id = n.id and a.user_id = $1
  left join herald.notification_snoozed z on z.notification_id = n.id and z.user_id = $1
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and ($4::bigint is null
        or (n.created_at, n.id) < ('epoch'::timestamptz + $4 * interval '1 microsecond', $5))
   and (not $6 or s.seen_at is null)
   and case $8::text
         when 'archived' then a.archived_at is not null
         when 'snoozed' then z.until is not null
         else a.archived_at is null and z.until is null
       end
   and herald.kind_matches(n.kind, $9)
   and ($10::text[] is null or n.importance = any ($10))
 order by n.created_at desc, n.id desc
 limit $7
