-- The roles a DBA creates for herald, with exactly the privileges each needs.
--
--   herald_producer  applications that send notifications: insert them,
--                    retract them (retracted_at), and keep herald.users in sync
--   herald_service   herald itself (`herald serve --no-migrate`): reads
--                    everything, writes read receipts and delivery records,
--                    prunes the event log and old notifications
--   herald_auditor   reads everything, writes nothing
--
-- Nobody is granted a write on herald.events: herald's triggers append to it
-- as their owner, and the log's own guards (migration V5) refuse direct
-- writes even from its owner or a superuser.
--
-- The three are group roles without LOGIN; grant them to the roles that
-- connect, e.g.
--
--   create role orders_app login password '...' in role herald_producer;
--   create role herald_app login password '...' in role herald_service;
--
-- Migrations stay with the schema's owner (`herald migrate`, run as the role
-- that owns schema herald); herald_service cannot create or alter anything,
-- so `herald serve` runs as it with --no-migrate.
--
-- Run this file as a superuser (or the owner of schema herald with
-- CREATEROLE) after `herald migrate`: psql "$DATABASE_URL" -f deploy/roles.sql.
-- It is idempotent; run it again after an upgrade, as a new migration may add
-- tables.

do $$
declare
  name text;
begin
  foreach name in array array['herald_producer', 'herald_service', 'herald_auditor'] loop
    if not exists (select from pg_roles where rolname = name) then
      execute format('create role %I nologin', name);
    end if;
  end loop;
end $$;

grant usage on schema herald to herald_producer, herald_service, herald_auditor;

-- ---------------------------------------------------------------------------
-- producers
-- ---------------------------------------------------------------------------
-- select: insert ... returning id, and the where clause of a retraction.
grant select, insert on herald.notifications to herald_producer;
-- Only retracted_at: a notification's content is final (notifications_immutable).
grant update (retracted_at) on herald.notifications to herald_producer;
-- The user directory, kept in sync by the application (docs/producers.md);
-- deleting a user disconnects their sockets.
grant select, insert, update, delete on herald.users to herald_producer;

-- ---------------------------------------------------------------------------
-- herald
-- ---------------------------------------------------------------------------
grant select on herald.users, herald.notifications, herald.notification_seen,
                herald.notification_deliveries, herald.events, herald.event_retention
   to herald_service;
-- mark.read and mark.all_read; mark.delivered and the SENT records.
grant insert on herald.notification_seen to herald_service;
-- Web Push: subscriptions, the due queue and the sends (migration V6).
grant select, insert, update, delete on herald.push_subscriptions, herald.push_due,
                                        herald.push_sends
   to herald_service;
grant insert, update on herald.notification_deliveries to herald_service;
-- Inbox state (migration V7): archive and snooze rows are written and
-- removed by herald for its clients; preferences likewise.
grant select, insert, update, delete on herald.notification_archived,
                                        herald.notification_snoozed,
                                        herald.notification_preferences
   to herald_service;
-- Delivery records lock the notification and user they refer to FOR KEY
-- SHARE, and pruning locks the rows it deletes FOR UPDATE; PostgreSQL allows
-- a row lock only to a role that may update some column of the table. These
-- columns grant the lock and nothing more: notifications' id cannot change
-- (notifications_immutable), users' updated_at is overwritten with now() by
-- users_touch_updated_at, and events cannot be updated at all (events_immutable).
grant update (id) on herald.notifications to herald_service;
grant update (updated_at) on herald.users to herald_service;
grant update (id) on herald.events to herald_service;
-- Pruning: herald.prune_events deletes events below the horizon it moves;
-- herald.prune_notifications (`herald prune --read-older-than`) deletes old
-- notifications with their receipts and delivery rows.
grant delete on herald.events, herald.notifications, herald.notification_seen,
                herald.notification_deliveries
   to herald_service;
grant update on herald.event_retention to herald_service;

-- ---------------------------------------------------------------------------
-- auditors
-- ---------------------------------------------------------------------------
-- Every table and view, herald.delivery_audit included.
grant select on all tables in schema herald to herald_auditor;
