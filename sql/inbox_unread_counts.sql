-- Unread counts of many users in one statement: after a batch of events,
-- herald asks once for every affected online user instead of once per user.
-- $1 user ids, $2 their sector ids, $3 whether each is an admin.
select u.user_id,
       (select count(*)
          from herald.inbox(u.user_id, u.sector_id, u.is_admin) n
         where n.retracted_at is null
           and (n.expires_at is null or n.expires_at > now())
           and not exists (select from herald.notification_seen s
                            where s.notification_id = n.id and s.user_id = u.user_id))
  from unnest($1::uuid[], $2::uuid[], $3::boolean[]) as u(user_id, sector_id, is_admin)
