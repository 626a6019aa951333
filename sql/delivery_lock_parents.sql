-- The delivery writer's guard against deletes (migration V10): taken
-- shared, in its own statement, before the batch looks its notifications
-- and users up (delivery_live_notifications.sql, delivery_live_users.sql),
-- so those lookups see every delete that committed first, and a delete
-- that comes later waits for this transaction.
select pg_advisory_xact_lock_shared(herald.delivery_parents_key())
