-- Guards the event log, disconnects deleted users, never announces a
-- notification that is dead on arrival, and names every refusal.
--
-- V1 said "triggers are the only writers of events"; nothing enforced it, so
-- a producer connected as the table's owner (or as a superuser, as many do)
-- could insert a forged notification.created that herald pushed live, or
-- rewrite history with update and delete. Privileges cannot stop an owner or
-- a superuser, so the rule is enforced by triggers on the log itself:
--
--   insert    only from inside another trigger (pg_trigger_depth() > 1):
--             herald's triggers on notifications, notification_seen and users;
--   update    never: the log is append-only;
--   delete    only of events below the pruned horizon
--             (event_retention.pruned_through_tx), which herald.prune_events
--             now moves before it deletes. A deletion is then always one that
--             resuming clients are told about (sync:reset), never a silent
--             hole in the history they replay;
--   truncate  never (it would bypass the delete rule).
--
-- An owner or superuser can still switch the guards off (alter table ...
-- disable trigger, session_replication_role = replica): that is a deliberate
-- act, not a stray statement. Logical replication applies rows in replica
-- mode, so a subscriber receives the publisher's events untouched.
--
-- The trigger functions that write the log (or clean up delivery rows) run
-- as their owner (security definer), so the roles of deploy/roles.sql need
-- no privilege on events or notification_deliveries: a producer's insert into
-- notifications writes its event through the trigger and through nothing
-- else. Their search_path is pinned, as every security definer function's
-- must be, and only their owner may attach them to other tables.
--
-- Every refusal reads the same way: the error's constraint field is set, and
-- the message names the constraint too, in the words PostgreSQL uses for its
-- own ("... violates check constraint "notifications_title_length""), so a
-- producer reading psql, a driver's message or a log line sees which rule.

-- ---------------------------------------------------------------------------
-- refusals that name their constraint in the message
-- ---------------------------------------------------------------------------
create or replace function herald.notifications_infer_audience() returns trigger
language plpgsql as $$
begin
  if new.audience is null then
    if new.user_id is not null and new.sector_id is null then
      new.audience := 'user';
    elsif new.sector_id is not null and new.user_id is null then
      new.audience := 'sector';
    else
      raise exception 'new row for relation "notifications" violates check constraint "notifications_audience_required": audience is required unless exactly one of user_id or sector_id is set'
        using errcode = 'check_violation',
              schema = 'herald',
              table = 'notifications',
              column = 'audience',
              constraint = 'notifications_audience_required';
    end if;
  end if;
  return new;
end $$;

create or replace function herald.notifications_guard_update() returns trigger
language plpgsql as $$
begin
  if (new.id, new.audience, new.user_id, new.sector_id, new.kind, new.importance,
      new.title, new.message, new.action_url, new.data, new.created_at, new.expires_at)
     is distinct from
     (old.id, old.audience, old.user_id, old.sector_id, old.kind, old.importance,
      old.title, old.message, old.action_url, old.data, old.created_at, old.expires_at)
  then
    raise exception 'new row for relation "notifications" violates check constraint "notifications_immutable": only retracted_at may be updated; insert a new notification instead'
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'notifications',
            constraint = 'notifications_immutable';
  end if;
  if old.retracted_at is not null and new.retracted_at is distinct from old.retracted_at then
    raise exception 'new row for relation "notifications" violates check constraint "notifications_retraction_final": notification % is already retracted', old.id
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'notifications',
            column = 'retracted_at',
            constraint = 'notifications_retraction_final';
  end if;
  return new;
end $$;

-- ---------------------------------------------------------------------------
-- not-null refusals with a name
-- ---------------------------------------------------------------------------
-- PostgreSQL 15 cannot name a NOT NULL constraint, so an explicit null was
-- the one refusal a producer got without a name. These triggers fire before
-- each row is written, after the column defaults are filled in (so only an
-- explicit null is refused) and before PostgreSQL's own checks, and raise
-- PostgreSQL's not-null error (same SQLSTATE 23502, same message) with a
-- constraint name added: <table>_<column>_required, the scheme of
-- notifications_audience_required. The NOT NULLs stay, so the catalog still
-- says what is nullable. Trigger names sort after the other before triggers
-- of each table (they fire in name order): audience inference runs first,
-- and users' touch trigger still fills updated_at on update.

create function herald.notifications_require_values() returns trigger
language plpgsql as $$
declare
  missing text := case
    when new.id is null then 'id'
    when new.kind is null then 'kind'
    when new.importance is null then 'importance'
    when new.title is null then 'title'
    when new.message is null then 'message'
    when new.data is null then 'data'
    when new.created_at is null then 'created_at'
  end;
begin
  if missing is not null then
    raise exception 'null value in column "%" of relation "notifications" violates not-null constraint "notifications_%_required"', missing, missing
      using errcode = 'not_null_violation',
            schema = 'herald',
            table = 'notifications',
            column = missing,
            constraint = 'notifications_' || missing || '_required';
  end if;
  return new;
end $$;

create trigger notifications_values_required
  before insert on herald.notifications
  for each row execute function herald.notifications_require_values();

create function herald.users_require_values() returns trigger
language plpgsql as $$
declare
  missing text := case
    when new.id is null then 'id'
    when new.name is null then 'name'
    when new.role is null then 'role'
    when new.is_active is null then 'is_active'
    when new.created_at is null then 'created_at'
    when new.updated_at is null then 'updated_at'
  end;
begin
  if missing is not null then
    raise exception 'null value in column "%" of relation "users" violates not-null constraint "users_%_required"', missing, missing
      using errcode = 'not_null_violation',
            schema = 'herald',
            table = 'users',
            column = missing,
            constraint = 'users_' || missing || '_required';
  end if;
  return new;
end $$;

-- Updates too: a sync job may set a column to null on an existing user.
create trigger users_values_required
  before insert or update on herald.users
  for each row execute function herald.users_require_values();

-- ---------------------------------------------------------------------------
-- the triggers that write the log run as their owner
-- ---------------------------------------------------------------------------
-- A notification inserted already retracted, or already expired (an import of
-- history, a backfill), was announced as notification:new and then nothing
-- ever withdrew it. Such a row is now never logged as created: no live push,
-- no replay, and (as before) no pending push, since those read only live rows.
-- Rows that expire between this statement and their push are still skipped
-- by herald itself.
create or replace function herald.log_notifications_created() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into herald.events (kind, notification_id, user_id, sector_id, audience, payload)
  select 'notification.created', n.id, n.user_id, n.sector_id, n.audience,
         herald.notification_json(n)
    from inserted n
   where n.retracted_at is null
     and (n.expires_at is null or n.expires_at > now());
  return null;
end $$;

alter function herald.log_notifications_retracted()
  security definer set search_path = pg_catalog, pg_temp;
alter function herald.log_notifications_read()
  security definer set search_path = pg_catalog, pg_temp;
alter function herald.log_users_updated()
  security definer set search_path = pg_catalog, pg_temp;
-- V4's replacements for on delete cascade: a producer deleting a user needs
-- no privilege on notification_deliveries.
alter function herald.delete_deliveries_of_notifications()
  security definer set search_path = pg_catalog, pg_temp;
alter function herald.delete_deliveries_of_users()
  security definer set search_path = pg_catalog, pg_temp;

-- ---------------------------------------------------------------------------
-- deleting a user disconnects them, like is_active = false
-- ---------------------------------------------------------------------------
-- A delete wrote no event, so a deleted user's sockets kept receiving
-- broadcasts until their tokens expired. It now logs what deactivation logs:
-- a user.updated event with isActive false (and deleted true), which every
-- herald instance already handles by disconnecting the user's sockets; an
-- instance still running an older herald during an upgrade handles it too,
-- which a new event kind would not give. Users already inactive have no
-- sockets, so deleting them logs nothing. herald.events has no foreign keys,
-- so the event outlives the row it describes.
create function herald.log_users_deleted() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into herald.events (kind, user_id, sector_id, audience, payload)
  select 'user.updated', o.id, o.sector_id, 'user',
         jsonb_build_object('userId', o.id,
                            'isActive', false,
                            'deleted', true,
                            'role', o.role,
                            'sectorId', o.sector_id,
                            'previousRole', o.role,
                            'previousSectorId', o.sector_id)
    from gone o
   where o.is_active;
  return null;
end $$;

create trigger users_log_deleted
  after delete on herald.users
  referencing old table as gone
  for each statement execute function herald.log_users_deleted();

-- TRUNCATE fires no delete triggers: it would remove users and leave their
-- sockets connected. Deleting the rows does the same work and tells herald.
create function herald.users_refuse_truncate() returns trigger
language plpgsql as $$
begin
  raise exception 'truncate of relation "users" violates constraint "users_deletes_logged": truncate would leave deleted users connected; delete the rows instead'
    using errcode = 'check_violation',
          schema = 'herald',
          table = 'users',
          constraint = 'users_deletes_logged';
end $$;

create trigger users_deletes_logged
  before truncate on herald.users
  for each statement execute function herald.users_refuse_truncate();

-- Only their owner may attach these to another table (firing them needs no
-- privilege): a role that could would write events through them.
revoke execute on function
  herald.log_notifications_created(),
  herald.log_notifications_retracted(),
  herald.log_notifications_read(),
  herald.log_users_updated(),
  herald.log_users_deleted(),
  herald.delete_deliveries_of_notifications(),
  herald.delete_deliveries_of_users()
  from public;

-- ---------------------------------------------------------------------------
-- the guards on herald.events
-- ---------------------------------------------------------------------------
-- Statement-level, so a 10,000-row insert ... select pays for one check, not
-- 10,000. pg_trigger_depth() is 1 in a trigger fired by a plain statement (a
-- client's insert, a function, a DO block, COPY) and 2 or more in one fired
-- by an insert that a trigger made.
create function herald.events_refuse_direct_writes() returns trigger
language plpgsql as $$
begin
  if tg_op = 'INSERT' then
    if pg_trigger_depth() > 1 then
      return null;
    end if;
    raise exception 'insert into relation "events" violates constraint "events_written_by_triggers": only herald''s triggers append to the event log; write herald.notifications, notification_seen or users instead'
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'events',
            constraint = 'events_written_by_triggers';
  elsif tg_op = 'UPDATE' then
    raise exception 'update of relation "events" violates constraint "events_immutable": the event log is append-only'
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'events',
            constraint = 'events_immutable';
  else
    raise exception 'truncate of relation "events" violates constraint "events_pruned_only": events are deleted by herald.prune_events(), below the pruned horizon'
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'events',
            constraint = 'events_pruned_only';
  end if;
end $$;

create trigger events_written_by_triggers
  before insert on herald.events
  for each statement execute function herald.events_refuse_direct_writes();

create trigger events_immutable
  before update on herald.events
  for each statement execute function herald.events_refuse_direct_writes();

create trigger events_truncate_refused
  before truncate on herald.events
  for each statement execute function herald.events_refuse_direct_writes();

-- After the statement, over the rows it deleted: every one must lie below
-- the horizon, that is, its deletion has been announced to resuming clients.
create function herald.events_check_pruned() returns trigger
language plpgsql as $$
declare
  horizon xid8 := (select pruned_through_tx from herald.event_retention);
  offending bigint;
begin
  select g.id into offending
    from gone g
   where horizon is null or g.tx >= horizon
   limit 1;
  if offending is not null then
    raise exception 'delete from relation "events" violates constraint "events_pruned_only": event % lies above the pruned horizon; prune with herald.prune_events()', offending
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'events',
            constraint = 'events_pruned_only';
  end if;
  return null;
end $$;

create trigger events_pruned_only
  after delete on herald.events
  referencing old table as gone
  for each statement execute function herald.events_check_pruned();

-- Moving the horizon back would let a client resume across pruned events as
-- if nothing were missing.
create function herald.event_retention_guard_update() returns trigger
language plpgsql as $$
begin
  if new.pruned_through_tx < old.pruned_through_tx then
    raise exception 'new row for relation "event_retention" violates check constraint "event_retention_forward_only": pruned_through_tx may only grow'
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'event_retention',
            column = 'pruned_through_tx',
            constraint = 'event_retention_forward_only';
  end if;
  return new;
end $$;

create trigger event_retention_forward_only
  before update on herald.event_retention
  for each row execute function herald.event_retention_guard_update();

-- Pruning moves the horizon first, then deletes, so the guard above lets its
-- deletes through; otherwise as in V2.
create or replace function herald.prune_events(p_older_than interval, p_batch integer)
returns integer
language plpgsql as $$
declare
  doomed bigint[];
  newest xid8;
  deleted integer;
begin
  select array_agg(d.id), max(d.tx) into doomed, newest
    from (
      select id, tx from herald.events
       where created_at < now() - p_older_than
       order by created_at, id
       limit p_batch
       for update skip locked
    ) d;
  if doomed is null then
    return 0;
  end if;
  update herald.event_retention
     set pruned_through_tx = greatest(pruned_through_tx, (newest::text::bigint + 1)::text::xid8),
         pruned_at = now();
  delete from herald.events where id = any (doomed);
  get diagnostics deleted = row_count;
  return deleted;
end $$;
