-- Deletes $1's subscription to $2; nothing when it is not theirs.
-- $1 user_id, $2 endpoint
delete from herald.push_subscriptions where user_id = $1 and endpoint = $2
