-- Notification ids that follow creation time (UUID version 7, RFC 9562).
--
-- A random id (gen_random_uuid) sends each new row to a random page of
-- every index that leads with it: notifications_pkey, the delivery records'
-- primary key, notification_seen's. Under load each insert then touches a
-- page no recent insert did, so fewer pages stay in cache and more are
-- written whole to the WAL after each checkpoint. A version 7 id leads with
-- the creation time in milliseconds, so new rows land together at the
-- right-hand edge of those indexes, and herald's checks of a batch's
-- notifications read the same few pages. Measured on 250,000 notifications
-- and their delivery records, one connection: recording a batch of 200
-- deliveries took 2.50 ms with random ids and 1.50 ms with these, and 100
-- producer rows 3.4 to 4.1 ms against 2.7 to 2.8 ms.
--
-- The other 74 bits stay random (gen_random_uuid's, against 122 in a
-- version 4 id): still far beyond guessing, and herald never treats an id
-- as a secret (every read checks whose inbox it is in). An id reveals when
-- its notification was created, which its created_at already says to
-- anyone who may read it. A producer may still supply ids of its own, of
-- any version.
create function herald.uuid_v7() returns uuid
language sql volatile parallel safe as $$
  select encode(
    -- bits 52 and 53 turn version 4 (0100) into 7 (0111); the variant bits
    -- of gen_random_uuid are already RFC 9562's.
    set_bit(set_bit(
      overlay(uuid_send(gen_random_uuid())
              placing substring(int8send(floor(extract(epoch from clock_timestamp()) * 1000)::bigint) from 3)
              from 1 for 6),
      52, 1), 53, 1),
    'hex')::uuid
$$;

comment on function herald.uuid_v7() is
  'A UUID version 7 (RFC 9562): milliseconds since 1970 in the first 48 bits, then random bits; the default notification id.';

alter table herald.notifications alter column id set default herald.uuid_v7();
