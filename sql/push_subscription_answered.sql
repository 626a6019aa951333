-- A subscription's record of the last answer: an accepted push clears its
-- failures; a failure counts one more. Returns the failures in a row.
-- $1 subscription_id, $2 accepted
update herald.push_subscriptions
   set failures = case when $2 then 0 else failures + 1 end,
       last_used_at = case when $2 then now() else last_used_at end
 where id = $1
returning failures
