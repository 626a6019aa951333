-- Claims sends whose time has come, at most $1, for this instance: SKIP
-- LOCKED hands each row to one instance, and 'sending' is committed before
-- the request goes out. A send that is no longer wanted (read, retracted,
-- expired, past its TTL, reached on a socket meanwhile, snoozed, its kind
-- muted for PUSH since, the user deactivated) is marked 'skipped' instead
-- and not returned.
-- $1 how many at most
with claimable as (
  select p.notification_id, p.subscription_id,
         (n.retracted_at is null
          and (n.expires_at is null or n.expires_at > now())
          and p.deadline > now()
          and u.is_active
          and not exists (select from herald.notification_seen r
                           where r.notification_id = p.notification_id and r.user_id = p.user_id)
          and not exists (select from herald.notification_deliveries d
                           where d.notification_id = p.notification_id and d.user_id = p.user_id
                             and d.channel = 'IN_APP' and d.status in ('SENT', 'DELIVERED'))
          and not exists (select from herald.notification_snoozed z
                           where z.notification_id = p.notification_id and z.user_id = p.user_id)
          and (select enabled from herald.kind_setting(p.user_id, n.kind, n.importance, 'PUSH'))
         ) as wanted
    from herald.push_sends p
    join herald.notifications n on n.id = p.notification_id
    join herald.users u on u.id = p.user_id
   where p.state = 'pending' and p.due_at <= now()
   order by p.due_at
   limit $1
     for update of p skip locked
),
claimed as (
  update herald.push_sends p
     set state = case when c.wanted then 'sending' else 'skipped' end,
         claimed_at = now(),
         attempts = p.attempts + case when c.wanted then 1 else 0 end
    from claimable c
   where p.notification_id = c.notification_id and p.subscription_id = c.subscription_id
  returning p.notification_id, p.subscription_id, p.user_id, p.deadline, p.attempts, c.wanted
)
select c.notification_id, c.subscription_id, c.user_id, c.attempts,
       greatest(extract(epoch from c.deadline - now()), 0)::float8 as ttl_seconds,
       s.endpoint, s.p256dh, s.auth,
       n.kind, n.importance, n.title, n.message, n.action_url, n.created_at
  from claimed c
  join herald.push_subscriptions s on s.id = c.subscription_id
  join herald.notifications n on n.id = c.notification_id
 where c.wanted
