-- Claims due dismisses (a pushed notification was read or retracted) whose
-- time has come, at most $1, for this instance. A dismiss that was answered
-- 429 or 5xx is due again at due_at. attempts counts the requests made for
-- the push and its dismiss together, for the backoff.
-- $1 how many at most
with claimable as (
  select p.notification_id, p.subscription_id
    from herald.push_sends p
   where p.dismiss_state = 'due' and p.due_at <= now()
   limit $1
     for update skip locked
),
claimed as (
  update herald.push_sends p
     set dismiss_state = 'sending', claimed_at = now(), attempts = p.attempts + 1
    from claimable c
   where p.notification_id = c.notification_id and p.subscription_id = c.subscription_id
  returning p.notification_id, p.subscription_id, p.user_id, p.deadline, p.attempts
)
select c.notification_id, c.subscription_id, c.user_id, c.attempts,
       greatest(extract(epoch from c.deadline - now()), 0)::float8 as ttl_seconds,
       s.endpoint, s.p256dh, s.auth
  from claimed c
  join herald.push_subscriptions s on s.id = c.subscription_id
