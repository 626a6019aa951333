-- Records a dismiss's answer: 'sent', 'failed' (for good), or 'due' again
-- to retry after $4 seconds (the push service answered 429 or 5xx).
-- $1 notification_id, $2 subscription_id, $3 new dismiss state, $4 retry in
-- (seconds)
update herald.push_sends
   set dismiss_state = $3,
       due_at = case when $3 = 'due' then now() + make_interval(secs => $4) else due_at end
 where notification_id = $1 and subscription_id = $2 and dismiss_state = 'sending'
