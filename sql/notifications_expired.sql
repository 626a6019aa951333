-- Notifications whose expiry passed in ($1, $2]: their unread recipients'
-- counts just fell. Served by notifications_expires_idx.
select distinct audience, user_id, sector_id
  from herald.notifications
 where expires_at > $1 and expires_at <= $2
   and retracted_at is null
