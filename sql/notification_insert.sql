-- herald send: one notification, as a producer would insert it.
-- $1 audience, $2 user_id, $3 sector_id, $4 kind, $5 importance, $6 title,
-- $7 message, $8 action_url, $9 data (null keeps the column defaults).
insert into herald.notifications
  (audience, user_id, sector_id, kind, importance, title, message, action_url, data)
values
  ($1, $2, $3, coalesce($4, 'general'), coalesce($5, 'normal'), $6,
   coalesce($7, ''), $8, coalesce($9, '{}'::jsonb))
returning id
