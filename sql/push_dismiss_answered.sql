-- Records a dismiss's answer: 'sent' or 'failed' (a dismiss is tried once).
-- $1 notification_id, $2 subscription_id, $3 new dismiss state
update herald.push_sends
   set dismiss_state = $3
 where notification_id = $1 and subscription_id = $2 and dismiss_state = 'sending'
