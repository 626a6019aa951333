-- Inbox state beyond read: archive, snooze, and per-kind preferences.
--
--   notification_archived     one row per (notification, user) archived;
--   notification_snoozed      one row per (notification, user) hidden until
--                             `until`; deleting the row ends the snooze;
--   notification_preferences  per user, kind pattern and channel: enabled.
--
-- As with reads, each change is a row, and a trigger appends it to
-- herald.events in the same transaction, so every instance hears of it
-- from the log (the NOTIFY of V1 fires for these rows as for any other):
--
--   notification.archived     a row inserted into notification_archived
--   notification.unarchived   a row deleted from it
--   notification.snoozed      a row inserted into notification_snoozed, or
--                             its until changed
--   notification.unsnoozed    a row deleted from it: a wake-up (until has
--                             passed; payload woke = true) or an early end
--   preferences.updated       any change to a user's preferences; the
--                             payload is the user's whole list after it
--
-- Every one is addressed to its user (audience 'user'), so the replay
-- queries send it to that user's sockets only, like a read.
--
-- Archiving also reads: whoever writes the archive row (herald, or a
-- producer in SQL), the trigger inserts the notification_seen row if there
-- was none, which logs its own notification.read, and ends a snooze of it.
-- Unarchiving leaves it read.

alter table herald.events drop constraint events_kind_valid;
alter table herald.events add constraint events_kind_valid check (kind in (
  'notification.created', 'notification.read', 'notification.retracted', 'user.updated',
  'notification.archived', 'notification.unarchived',
  'notification.snoozed', 'notification.unsnoozed',
  'preferences.updated'));

-- ---------------------------------------------------------------------------
-- archive
-- ---------------------------------------------------------------------------
create table herald.notification_archived (
  notification_id uuid not null,
  user_id         uuid not null,
  archived_at     timestamptz not null default now(),
  constraint notification_archived_pkey primary key (notification_id, user_id),
  constraint notification_archived_notification_fkey foreign key (notification_id)
    references herald.notifications (id) on delete cascade,
  constraint notification_archived_user_fkey foreign key (user_id)
    references herald.users (id) on delete cascade
);
-- A user's archive, newest first (the archived list), and the cascade when
-- a user is deleted.
create index notification_archived_user_idx
  on herald.notification_archived (user_id, archived_at desc);

-- Fires after each INSERT statement: the reads first (so the read event
-- precedes the archive's in the log), the end of any snooze, then the log.
create function herald.log_notifications_archived() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into herald.notification_seen (notification_id, user_id, seen_at)
  select a.notification_id, a.user_id, a.archived_at from archived a
  on conflict (notification_id, user_id) do nothing;
  delete from herald.notification_snoozed s
   using archived a
   where s.notification_id = a.notification_id and s.user_id = a.user_id;
  insert into herald.events (kind, notification_id, user_id, audience, payload)
  select 'notification.archived', a.notification_id, a.user_id, 'user',
         jsonb_build_object('notificationId', a.notification_id,
                            'userId', a.user_id,
                            'archivedAt', herald.rfc3339(a.archived_at))
    from archived a;
  return null;
end $$;

create trigger notification_archived_log
  after insert on herald.notification_archived
  referencing new table as archived
  for each statement execute function herald.log_notifications_archived();

create function herald.log_notifications_unarchived() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into herald.events (kind, notification_id, user_id, audience, payload)
  select 'notification.unarchived', a.notification_id, a.user_id, 'user',
         jsonb_build_object('notificationId', a.notification_id, 'userId', a.user_id)
    from unarchived a;
  return null;
end $$;

create trigger notification_archived_log_deleted
  after delete on herald.notification_archived
  referencing old table as unarchived
  for each statement execute function herald.log_notifications_unarchived();

-- ---------------------------------------------------------------------------
-- snooze
-- ---------------------------------------------------------------------------
create table herald.notification_snoozed (
  notification_id uuid not null,
  user_id         uuid not null,
  until           timestamptz not null,
  snoozed_at      timestamptz not null default now(),
  constraint notification_snoozed_pkey primary key (notification_id, user_id),
  constraint notification_snoozed_notification_fkey foreign key (notification_id)
    references herald.notifications (id) on delete cascade,
  constraint notification_snoozed_user_fkey foreign key (user_id)
    references herald.users (id) on delete cascade
);
-- The wake-up: the earliest until, and the rows whose until has passed.
create index notification_snoozed_until_idx on herald.notification_snoozed (until);
-- A user's snoozed notifications (the snoozed list, counts), and the cascade.
create index notification_snoozed_user_idx on herald.notification_snoozed (user_id);

-- Fires before each row is written. A CHECK may not depend on the clock, so
-- the bounds of until are checked here, with named refusals in the words
-- PostgreSQL uses for its own. A read notification cannot be snoozed: it
-- is not counted or pushed, so there is nothing to hide and nothing to wake.
create function herald.notification_snoozed_check() returns trigger
language plpgsql as $$
begin
  if tg_op = 'UPDATE' and new.until is not distinct from old.until then
    return new;
  end if;
  if new.until <= now() then
    raise exception 'new row for relation "notification_snoozed" violates check constraint "notification_snoozed_until_future": until must lie in the future'
      using errcode = 'check_violation', schema = 'herald', table = 'notification_snoozed',
            column = 'until', constraint = 'notification_snoozed_until_future';
  end if;
  if new.until > now() + interval '90 days' then
    raise exception 'new row for relation "notification_snoozed" violates check constraint "notification_snoozed_until_bounded": until must lie within 90 days'
      using errcode = 'check_violation', schema = 'herald', table = 'notification_snoozed',
            column = 'until', constraint = 'notification_snoozed_until_bounded';
  end if;
  if exists (select from herald.notification_seen s
              where s.notification_id = new.notification_id and s.user_id = new.user_id) then
    raise exception 'new row for relation "notification_snoozed" violates check constraint "notification_snoozed_unread_only": notification % is already read', new.notification_id
      using errcode = 'check_violation', schema = 'herald', table = 'notification_snoozed',
            constraint = 'notification_snoozed_unread_only';
  end if;
  return new;
end $$;

create trigger notification_snoozed_check
  before insert or update on herald.notification_snoozed
  for each row execute function herald.notification_snoozed_check();

-- Insert and update log notification.snoozed with the (new) until.
create function herald.log_notifications_snoozed() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into herald.events (kind, notification_id, user_id, audience, payload)
  select 'notification.snoozed', s.notification_id, s.user_id, 'user',
         jsonb_build_object('notificationId', s.notification_id,
                            'userId', s.user_id,
                            'until', herald.rfc3339(s.until))
    from snoozed s;
  return null;
end $$;

create trigger notification_snoozed_log
  after insert on herald.notification_snoozed
  referencing new table as snoozed
  for each statement execute function herald.log_notifications_snoozed();

create trigger notification_snoozed_log_updated
  after update on herald.notification_snoozed
  referencing new table as snoozed
  for each statement execute function herald.log_notifications_snoozed();

-- A deleted row is the end of a snooze, logged once whoever deletes it: the
-- instance that claims a due wake-up (delete ... for update skip locked), an
-- early unsnooze, or an archive.
create function herald.log_notifications_unsnoozed() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into herald.events (kind, notification_id, user_id, audience, payload)
  select 'notification.unsnoozed', s.notification_id, s.user_id, 'user',
         jsonb_build_object('notificationId', s.notification_id,
                            'userId', s.user_id,
                            'until', herald.rfc3339(s.until),
                            'woke', s.until <= now())
    from unsnoozed s;
  return null;
end $$;

create trigger notification_snoozed_log_deleted
  after delete on herald.notification_snoozed
  referencing old table as unsnoozed
  for each statement execute function herald.log_notifications_unsnoozed();

-- ---------------------------------------------------------------------------
-- preferences
-- ---------------------------------------------------------------------------
create table herald.notification_preferences (
  user_id       uuid not null,
  kind_pattern  text not null,
  channel       text not null,
  enabled       boolean not null,
  updated_at    timestamptz not null default now(),
  constraint notification_preferences_pkey primary key (user_id, kind_pattern, channel),
  constraint notification_preferences_user_fkey foreign key (user_id)
    references herald.users (id) on delete cascade,
  -- An exact kind (dot-separated segments of [a-z0-9_-]), such a prefix
  -- followed by `.*`, or `*` alone; as long as a kind may be.
  constraint notification_preferences_kind_pattern_valid check (
    kind_pattern ~ '^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$'
    and char_length(kind_pattern) <= 102),
  constraint notification_preferences_channel_valid check (channel in ('IN_APP', 'PUSH'))
);

-- Any change logs, per user it touched, that user's whole list after it:
-- what a client is sent, so it never merges partial changes. A deleted
-- user's rows go with them and log nothing (their sockets are closed).
create function herald.log_preferences_of(p_users uuid[]) returns void
language sql security definer set search_path = pg_catalog, pg_temp as $$
  insert into herald.events (kind, user_id, audience, payload)
  select 'preferences.updated', u.id, 'user',
         jsonb_build_object(
           'userId', u.id,
           'preferences', coalesce((
             select jsonb_agg(jsonb_build_object('kindPattern', p.kind_pattern,
                                                 'channel', p.channel,
                                                 'enabled', p.enabled)
                              order by p.kind_pattern, p.channel)
               from herald.notification_preferences p
              where p.user_id = u.id), '[]'::jsonb))
    from herald.users u
   where u.id = any (p_users)
$$;

-- Transition tables come one set per trigger event, hence three triggers.
create function herald.log_preferences_inserted() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform herald.log_preferences_of(array(select distinct user_id from changed));
  return null;
end $$;

create function herald.log_preferences_updated() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform herald.log_preferences_of(array(
    select user_id from changed union select user_id from previous));
  return null;
end $$;

create function herald.log_preferences_deleted() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  perform herald.log_preferences_of(array(select distinct user_id from previous));
  return null;
end $$;

create trigger notification_preferences_log_inserted
  after insert on herald.notification_preferences
  referencing new table as changed
  for each statement execute function herald.log_preferences_inserted();

create trigger notification_preferences_log_updated
  after update on herald.notification_preferences
  referencing old table as previous new table as changed
  for each statement execute function herald.log_preferences_updated();

create trigger notification_preferences_log_deleted
  after delete on herald.notification_preferences
  referencing old table as previous
  for each statement execute function herald.log_preferences_deleted();

-- As in V5: only their owner may attach these to another table.
revoke execute on function
  herald.log_notifications_archived(),
  herald.log_notifications_unarchived(),
  herald.log_notifications_snoozed(),
  herald.log_notifications_unsnoozed(),
  herald.log_preferences_of(uuid[]),
  herald.log_preferences_inserted(),
  herald.log_preferences_updated(),
  herald.log_preferences_deleted()
  from public;
