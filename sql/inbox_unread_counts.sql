-- Unread counts of many users in one statement: after a batch of events,
-- herald asks once for every affected online user instead of once per user.
-- $1 user ids, $2 their sector ids, $3 whether each is an admin.
--
-- Set-based rather than one inbox scan per user: a user's unread count is
-- their unread personal notifications, plus the live broadcasts addressed
-- to them (counted once per sector, not once per member), minus the live
-- broadcasts they have read, minus those unread that do not show. Equal
-- to inbox_unread_count.sql for each user
-- (tests/api/gateway.rs checks it), but a broadcast to 10,000 online users
-- costs one count per sector and one index probe per user.
-- The audience filter is the SQL twin of src/audience.rs (Audience::reaches),
-- as is herald.inbox(); tests/api/audience.rs checks that they agree.
with u as (
  select * from unnest($1::uuid[], $2::uuid[], $3::boolean[]) as u(user_id, sector_id, is_admin)
), live as not materialized (
  -- Inlined into each branch: materialized, it would read every
  -- notification on every call (445 ms -> 154 ms for 3,000 users of 288,200
  -- notifications).
  select n.* from herald.notifications n
   where n.retracted_at is null and (n.expires_at is null or n.expires_at > now())
), personal as (
  select n.user_id, count(*) as unread
    from u
    join live n on n.audience = 'user' and n.user_id = u.user_id
   where not exists (select from herald.notification_seen s
                      where s.notification_id = n.id and s.user_id = u.user_id)
   group by n.user_id
), per_sector as (
  select n.sector_id, count(*) as live
    from live n
   where n.audience = 'sector' and n.sector_id in (select distinct sector_id from u)
   group by n.sector_id
), broadcasts as (
  select count(*) filter (where audience = 'admin') as admin,
         count(*) filter (where audience = 'all') as everyone
    from live
   where audience in ('admin', 'all')
), hidden as (
  -- Unread notifications that do not show: snoozed, or of a kind muted
  -- for IN_APP. Only users with a snooze or an IN_APP preference can have
  -- any, so the others cost two index probes.
  select u.user_id, count(*) as hidden
    from u
    cross join lateral herald.inbox(u.user_id, u.sector_id, u.is_admin) n
   where (exists (select from herald.notification_snoozed z where z.user_id = u.user_id)
          or exists (select from herald.notification_preferences p
                      where p.user_id = u.user_id and p.channel = 'IN_APP'))
     and n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now())
     and not exists (select from herald.notification_seen s
                      where s.notification_id = n.id and s.user_id = u.user_id)
     and not (select shown from herald.visibility(n.id, u.user_id, n.kind, n.importance))
   group by u.user_id
), read_broadcasts as (
  select u.user_id, count(*) as read
    from u
    join herald.notification_seen s on s.user_id = u.user_id
    join live n on n.id = s.notification_id
   where (n.audience = 'sector' and n.sector_id = u.sector_id)
      or (n.audience = 'admin' and u.is_admin)
      or n.audience = 'all'
   group by u.user_id
)
select u.user_id,
       coalesce(p.unread, 0)
         + coalesce(ps.live, 0)
         + case when u.is_admin then b.admin else 0 end
         + b.everyone
         - coalesce(r.read, 0)
         - coalesce(h.hidden, 0) as unread
  from u
  cross join broadcasts b
  left join personal p on p.user_id = u.user_id
  left join per_sector ps on ps.sector_id = u.sector_id
  left join read_broadcasts r on r.user_id = u.user_id
  left join hidden h on h.user_id = u.user_id
