-- Delivery records are written in batches of thousands (a broadcast to
-- 10,000 online users is 10,000 SENT rows). Foreign keys check each inserted
-- row with a query of its own: measured on a 5,000-row batch, the two
-- foreign keys took 130 of its 190 ms. The same guarantees, per statement:
--
--   - the delivery writer (sql/delivery_record_sent.sql) and mark.delivered
--     lock the notifications and users they refer to FOR KEY SHARE, set-wise
--     in the statement itself, exactly the lock a foreign key check takes, so
--     a concurrent delete of either waits for them or makes them skip the row;
--   - deleting notifications or users deletes their delivery rows, once per
--     statement, as `on delete cascade` did.
--
-- Producers never write this table; herald and DBAs do.

alter table herald.notification_deliveries
  drop constraint notification_deliveries_notification_id_fkey,
  drop constraint notification_deliveries_user_id_fkey;

create function herald.delete_deliveries_of_notifications() returns trigger
language plpgsql as $$
begin
  delete from herald.notification_deliveries d
   using gone
   where d.notification_id = gone.id;
  return null;
end $$;

create trigger notifications_delete_deliveries
  after delete on herald.notifications
  referencing old table as gone
  for each statement execute function herald.delete_deliveries_of_notifications();

create function herald.delete_deliveries_of_users() returns trigger
language plpgsql as $$
begin
  delete from herald.notification_deliveries d
   using gone
   where d.user_id = gone.id;
  return null;
end $$;

create trigger users_delete_deliveries
  after delete on herald.users
  referencing old table as gone
  for each statement execute function herald.delete_deliveries_of_users();
