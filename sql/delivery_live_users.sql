-- Which of a delivery batch's users still exist, each distinct id probed
-- once by users_pkey, whatever the statistics say (see
-- delivery_live_notifications.sql). Run after delivery_lock_parents.sql, so
-- no delete can remove one of them before the batch commits.
select b.id
  from unnest($1::uuid[]) as b (id)
 where exists (select from herald.users u where u.id = b.id offset 0)
