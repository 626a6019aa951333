-- A batch of SENT records checks its notifications and users without
-- locking each of them.
--
-- Since V4 the delivery writer locked every notification and user a batch
-- refers to FOR KEY SHARE, the lock a foreign key check takes, so that a
-- delete running alongside waited for the batch or made it skip the rows
-- it removed. Each such lock writes to the locked row (and, when both
-- writers hold one on the same user, makes a MultiXact of it): a batch of
-- 5,000 personal notifications took 106 to 151 ms with the locks, 65 to
-- 104 ms without them (three runs each, on 202,200 notifications).
--
-- The same guarantee, with one lock instead of one per row: deleting
-- notifications or users first takes an exclusive transaction-level
-- advisory lock on herald.delivery_parents_key(); the writer takes it
-- shared, in a statement of its own, before the insert whose snapshot then
-- follows it. So a delete that committed first is seen by the insert, which
-- skips the rows it removed; and a delete that comes later waits for the
-- batch's commit, after which its per-statement cleanup (V4) sees the new
-- rows and deletes them. Deletes wait only for batches in flight (a few
-- milliseconds), and one another. mark.delivered and the Web Push worker
-- write one row at a time and keep their FOR KEY SHARE, which a delete
-- waits for as well.

-- The advisory lock's key, in the 64-bit key space; the same value always.
create function herald.delivery_parents_key() returns bigint
language sql immutable as $$
  select hashtextextended('herald.delivery_parents', 0)
$$;

create function herald.lock_delivery_parents() returns trigger
language plpgsql as $$
begin
  perform pg_advisory_xact_lock(herald.delivery_parents_key());
  return null;
end $$;

create trigger notifications_lock_delivery_parents
  before delete on herald.notifications
  for each statement execute function herald.lock_delivery_parents();

create trigger users_lock_delivery_parents
  before delete on herald.users
  for each statement execute function herald.lock_delivery_parents();

-- As V5's trigger functions: only their owner may attach it elsewhere.
revoke execute on function herald.lock_delivery_parents() from public;
