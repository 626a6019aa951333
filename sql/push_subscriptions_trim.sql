-- Keeps $1's $3 most recently used subscriptions, $2 among them; the
-- others go.
-- $1 user_id, $2 the subscription just stored, $3 the most one user keeps
delete from herald.push_subscriptions
 where id in (select id from herald.push_subscriptions
               where user_id = $1
               order by id = $2 desc, coalesce(last_used_at, created_at) desc, id
              offset $3)
