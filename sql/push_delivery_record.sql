-- The PUSH row of notification_deliveries for (notification, user): SENT
-- when a send was accepted ($3 null), turning an earlier FAILED into SENT;
-- FAILED with the error once no send of the pair is pending, under way or
-- sent. The notification and user are locked FOR KEY SHARE (migration V4).
-- $1 notification_id, $2 user_id, $3 error (null: sent)
with referenced as materialized (
  select n.id as notification_id, u.id as user_id
    from herald.notifications n, herald.users u
   where n.id = $1 and u.id = $2
     for key share
)
insert into herald.notification_deliveries (notification_id, user_id, channel, status, sent_at, error)
select r.notification_id, r.user_id, 'PUSH',
       case when $3::text is null then 'SENT' else 'FAILED' end,
       case when $3::text is null then now() end,
       $3::text
  from referenced r
 where $3::text is null
    or not exists (select from herald.push_sends p
                    where p.notification_id = $1 and p.user_id = $2
                      and p.state in ('pending', 'sending', 'sent'))
on conflict (notification_id, user_id, channel) do update
   set status = 'SENT', sent_at = excluded.sent_at, error = null
 where excluded.status = 'SENT' and herald.notification_deliveries.status = 'FAILED'
