-- The delivery writer's guard against deletes (migration V10): taken
-- shared, in its own statement, before delivery_record_sent.sql, so that
-- insert's snapshot follows every delete that committed first, and a
-- delete that comes later waits for this transaction.
select pg_advisory_xact_lock_shared(herald.delivery_parents_key())
