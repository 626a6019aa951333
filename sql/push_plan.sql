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
-- By key, as an array: joined to `due`, whose size the planner cannot know,
-- the delete may compare every due row with every row taken.
taken as (
  delete from herald.push_due d
   where d.notification_id = any (array(select notification_id from due))
  returning d.notification_id
),
planned as (
  insert into herald.push_sends (notification_id, subscription_id, user_id, deadline)
  select n.id, s.id, u.id, coalesce(n.expires_at, now() + make_interval(secs => $4))
    from taken t
    -- Each taken notification by key, and everything below for it alone:
    -- `offset 0` keeps the planner from reading every notification's
    -- recipients once and matching them to the taken ones, the plan it
    -- picks when its statistics say the table is small.
    cross join lateral (
      select * from herald.notifications n where n.id = t.notification_id offset 0
    ) n
    -- Who a notification addresses, found per notification by index
    -- where its audience has one (only its audience's branch runs), and
    -- their subscriptions by user, so deciding costs what its recipients
    -- do. (A case on the audience over every user, joined to every
    -- subscription, compared each notification with every subscription:
    -- 200 personal notifications against 10,000 subscriptions were
    -- 2,000,000 rows, 167 to 287 ms a tick.)
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
      select s.id, s.user_id from herald.push_subscriptions s where s.user_id = u.id offset 0
    ) s
   where u.is_active
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
     and array_position(array['low', 'normal', 'high', 'urgent'], n.importance) >= $3
     -- The checks of each (notification, user) below name the user as
     -- s.user_id (the same as u.id), so they run only for users with a
     -- subscription; each is a probe by key whatever the statistics say:
     -- `offset 0` here, and on the subscriptions above, keeps a check from
     -- becoming a join, which the planner may make by hashing the whole
     -- table (every delivery record there is) on every tick.
     and not exists (select from herald.notification_seen r
                      where r.notification_id = n.id and r.user_id = s.user_id offset 0)
     and not exists (select from herald.notification_deliveries d
                      where d.notification_id = n.id and d.user_id = s.user_id
                        and d.channel = 'IN_APP' and d.status in ('SENT', 'DELIVERED') offset 0)
     and not exists (select from herald.notification_snoozed z
                      where z.notification_id = n.id and z.user_id = s.user_id offset 0)
     and (select enabled from herald.kind_setting(s.user_id, n.kind, n.importance, 'PUSH'))
  on conflict on constraint push_sends_pkey do nothing
  returning 1
)
select (select count(*) from taken) as decided, (select count(*) from planned) as planned
