-- Takes the sends of one (notification, user) in subscription order before
-- an answer is recorded, so that the answers for a user's subscriptions are
-- recorded one after another: each then sees the others' outcome, and the
-- last one to fail writes PUSH/FAILED (two concurrent answers would each
-- see the other still 'sending' and neither would).
-- $1 notification_id, $2 user_id
select 1
  from herald.push_sends
 where notification_id = $1 and user_id = $2
 order by subscription_id
   for update
