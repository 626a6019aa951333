-- Claims due dismisses (a pushed notification was read or retracted), at
-- most $1, for this instance.
-- $1 how many at most
with claimable as (
  select p.notification_id, p.subscription_id
    from herald.push_sends p
   where p.dismiss_state = 'due'
   limit $1
     for update skip locked
),
claimed as (
  update herald.push_sends p
     set dismiss_state = 'sending', claimed_at = now()
    from claimable c
   where p.notification_id = c.notification_id and p.subscription_id = c.subscription_id
  returning p.notification_id, p.subscription_id, p.deadline
)
select c.notification_id, c.subscription_id,
       greatest(extract(epoch from c.deadline - now()), 0)::float8 as ttl_seconds,
       s.endpoint, s.p256dh, s.auth
  from claimed c
  join herald.push_subscriptions s on s.id = c.subscription_id
