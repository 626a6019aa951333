-- Records the push service's answer to a claimed send: 'sent', 'failed'
-- (for good), or 'pending' again to retry after $4 seconds. A sent push
-- whose notification was read or retracted while it was under way has its
-- dismiss due at once.
-- $1 notification_id, $2 subscription_id, $3 new state, $4 retry in
-- (seconds), $5 error
update herald.push_sends p
   set state = $3,
       due_at = case when $3 = 'pending' then now() + make_interval(secs => $4) else p.due_at end,
       sent_at = case when $3 = 'sent' then now() end,
       error = $5,
       dismiss_state = case
         when $3 = 'sent' and (n.retracted_at is not null
                               or exists (select from herald.notification_seen r
                                           where r.notification_id = p.notification_id
                                             and r.user_id = p.user_id))
         then 'due'
       end
  from herald.notifications n
 where n.id = p.notification_id
   and p.notification_id = $1 and p.subscription_id = $2
   and p.state = 'sending'
returning p.user_id
