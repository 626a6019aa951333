-- Decides, for notifications whose HERALD_PUSH_DELAY has passed, who gets a
-- push: each addressed, active user with subscriptions who has neither read
-- it nor received it on a socket (an IN_APP row), has not snoozed it and
-- does not mute its kind for PUSH (herald.kind_setting), one send per
-- subscription. The due rows are taken (deleted) in the same statement that
-- plans their sends, and SKIP LOCKED lets instances share the queue without
-- ever taking the same row: each due notification is decided exactly once.
-- $1 delay (seconds), $2 admin roles, $3 lowest importance pushed (1 low ..
-- 4 urgent), $4 default TTL (seconds), $5 how many notifications at most
with due as (
  select d.notification_id
    from herald.push_due d
   where d.visible_at <= now() - make_interval(secs => $1)
   order by d.visible_at
   limit $5
     for update skip locked
),
taken as (
  delete from herald.push_due d
   using due
   where d.notification_id = due.notification_id
  returning d.notification_id
),
planned as (
  insert into herald.push_sends (notification_id, subscription_id, user_id, deadline)
  select n.id, s.id, u.id, coalesce(n.expires_at, now() + make_interval(secs => $4))
    from taken t
    join herald.notifications n on n.id = t.notification_id
    -- Who a notification addresses, found per notification by index
    -- where its audience has one (only its audience's branch runs), and
    -- their subscriptions by user, so deciding costs what its recipients
    -- do. (A case on the audience over every user, joined to every
    -- subscription, compared each notification with every subscription:
    -- 200 personal notifications against 10,000 subscriptions were
    -- 2,000,000 rows, a third of a second a tick.) `offset 0` keeps the
    -- subscriptions a probe per user rather than a join the planner may
    -- hash, rebuilding the hash for every notification.
    cross join lateral (
      select u.id, u.is_active from herald.users u
       where n.audience = 'user' and u.id = n.user_id
      union all
      select u.id, u.is_active from herald.users u
       where n.audience = 'sector' and u.sector_id = n.sector_id
      union all
      select u.id, u.is_active from herald.users u
       where n.audience = 'admin' and u.role = any ($2::text[])
      union all
      select u.id, u.is_active from herald.users u
       where n.audience = 'all'
    ) u
    cross join lateral (
      select s.id from herald.push_subscriptions s where s.user_id = u.id offset 0
    ) s
   where u.is_active
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
     and array_position(array['low', 'normal', 'high', 'urgent'], n.importance) >= $3
     and not exists (select from herald.notification_seen r
                      where r.notification_id = n.id and r.user_id = u.id)
     and not exists (select from herald.notification_deliveries d
                      where d.notification_id = n.id and d.user_id = u.id
                        and d.channel = 'IN_APP' and d.status in ('SENT', 'DELIVERED'))
     and not exists (select from herald.notification_snoozed z
                      where z.notification_id = n.id and z.user_id = u.id)
     and (select enabled from herald.kind_setting(u.id, n.kind, n.importance, 'PUSH'))
  on conflict on constraint push_sends_pkey do nothing
  returning 1
)
select (select count(*) from taken) as decided, (select count(*) from planned) as planned
