-- Deletes a subscription the push service no longer knows (404, 410) or
-- that failed too often in a row; its sends go with it.
-- $1 subscription_id
delete from herald.push_subscriptions where id = $1
