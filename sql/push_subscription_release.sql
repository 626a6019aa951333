-- Deletes the subscription of $2 when a user other than $1 holds it.
-- $1 user_id, $2 endpoint
delete from herald.push_subscriptions
 where endpoint = $2 and user_id <> $1
