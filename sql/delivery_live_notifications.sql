-- Which of a delivery batch's notifications still exist, each distinct id
-- probed once by notifications_pkey. Run after delivery_lock_parents.sql,
-- so no delete can remove one of them before the batch commits.
--
-- A probe per id whatever the statistics say: `offset 0` keeps the EXISTS
-- from becoming a join, and unnest keeps the array out of a filter. A plan
-- made while the table was small or not yet analyzed would otherwise scan
-- the whole table for every batch, comparing each row with every id (the
-- plan a connection keeps from its sixth batch on assumes ten ids).
select b.id
  from unnest($1::uuid[]) as b (id)
 where exists (select from herald.notifications n where n.id = b.id offset 0)
