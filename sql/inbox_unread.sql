-- The pending push on connect: a user's newest unread, unexpired,
-- unretracted notifications that show (not snoozed, not muted for IN_APP),
-- with the id of each one's creation event (null once retention pruned it).
-- $1 user_id, $2 sector_id, $3 is_admin, $4 limit
select n.id, n.audience, n.kind, n.importance, n.title, n.message, n.action_url, n.data,
       herald.rfc3339(n.created_at) as created_at,
       herald.rfc3339(n.expires_at) as expires_at,
       (select e.id
          from herald.events e
         where e.notification_id = n.id and e.kind = 'notification.created'
         limit 1) as event_id
  from herald.inbox($1, $2, $3) n
 where n.retracted_at is null
   and (n.expires_at is null or n.expires_at > now())
   and not exists (select from herald.notification_seen s
                    where s.notification_id = n.id and s.user_id = $1)
   and (select shown from herald.visibility(n.id, $1, n.kind, n.importance))
 order by n.created_at desc, n.id desc
 limit $4
