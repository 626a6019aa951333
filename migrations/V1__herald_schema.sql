-- herald's schema: the tables producers and DBAs use, and the event log the
-- service tails.
--
-- Who writes what:
--   producers   insert into notifications (and may set retracted_at), keep users in sync
--   herald      inserts notification_seen and notification_deliveries
--   triggers    are the only writers of events
--
-- Every change a client must hear about is appended to herald.events by a
-- trigger in the same transaction as the change, so the log commits exactly
-- when the change does. NOTIFY is only a wake-up hint: herald reads the log.

create schema if not exists herald;

-- RFC 3339 in UTC with microseconds ("2026-11-27T09:18:14.123456Z"), the one
-- timestamp format clients see, independent of the session's TimeZone.
create function herald.rfc3339(ts timestamptz) returns text
language sql immutable strict parallel safe as $$
  select to_char(ts at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
$$;

-- ---------------------------------------------------------------------------
-- users: the directory the gateway authenticates against
-- ---------------------------------------------------------------------------
create table herald.users (
  id          uuid primary key,
  email       text unique,
  name        text not null,
  role        text not null default 'USER',
  sector_id   uuid null,
  is_active   boolean not null default true,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now(),
  constraint users_name_length check (char_length(name) between 1 and 200),
  constraint users_role_length check (char_length(role) between 1 and 64)
);

-- Sector rooms are joined by sector; broadcasts to a sector look users up by it.
create index users_sector_idx on herald.users (sector_id) where sector_id is not null;

-- Keeps updated_at honest whoever writes the row (a sync trigger, a job, a DBA).
create function herald.touch_updated_at() returns trigger
language plpgsql as $$
begin
  new.updated_at := now();
  return new;
end $$;

create trigger users_touch_updated_at
  before update on herald.users
  for each row execute function herald.touch_updated_at();

-- ---------------------------------------------------------------------------
-- notifications: what producers insert
-- ---------------------------------------------------------------------------
create table herald.notifications (
  id            uuid primary key default gen_random_uuid(),
  audience      text not null,
  user_id       uuid null references herald.users (id) on delete cascade,
  sector_id     uuid null,
  kind          text not null default 'general',
  importance    text not null default 'normal',
  title         text not null,
  message       text not null default '',
  action_url    text null,
  data          jsonb not null default '{}',
  created_at    timestamptz not null default now(),
  expires_at    timestamptz null,
  retracted_at  timestamptz null,

  constraint notifications_audience_valid
    check (audience in ('user', 'sector', 'admin', 'all')),
  -- user_id is set exactly for personal notifications, sector_id exactly for
  -- sector ones: a row can never be addressed two ways at once.
  constraint notifications_user_audience
    check ((audience = 'user') = (user_id is not null)),
  constraint notifications_sector_audience
    check ((audience = 'sector') = (sector_id is not null)),
  constraint notifications_kind_length
    check (char_length(kind) between 1 and 100),
  constraint notifications_importance_valid
    check (importance in ('low', 'normal', 'high', 'urgent')),
  constraint notifications_title_length
    check (char_length(title) between 1 and 200),
  constraint notifications_message_length
    check (char_length(message) <= 4000),
  constraint notifications_action_url_length
    check (char_length(action_url) <= 2048),
  constraint notifications_data_object
    check (jsonb_typeof(data) = 'object'),
  constraint notifications_data_size
    check (octet_length(data::text) <= 16384),
  constraint notifications_expires_after_created
    check (expires_at > created_at),
  constraint notifications_retracted_after_created
    check (retracted_at >= created_at)
);

-- "Unread notifications for user U" is a union of four index scans, one per
-- audience (see herald.inbox below); each returns newest first.
create index notifications_user_idx
  on herald.notifications (user_id, created_at desc, id desc) where audience = 'user';
create index notifications_sector_idx
  on herald.notifications (sector_id, created_at desc, id desc) where audience = 'sector';
create index notifications_broadcast_idx
  on herald.notifications (audience, created_at desc, id desc) where audience in ('admin', 'all');
-- Finds the notifications whose expiry just passed, to update unread counts.
create index notifications_expires_idx
  on herald.notifications (expires_at) where expires_at is not null;

-- Fires before each inserted row, before the constraints are checked: a
-- producer may leave audience out and let user_id or sector_id decide it.
-- Raises the named constraint itself when there is nothing to infer from, so
-- the producer sees a constraint name rather than a bare not-null error.
create function herald.notifications_infer_audience() returns trigger
language plpgsql as $$
begin
  if new.audience is null then
    if new.user_id is not null and new.sector_id is null then
      new.audience := 'user';
    elsif new.sector_id is not null and new.user_id is null then
      new.audience := 'sector';
    else
      raise exception 'herald.notifications: audience is required unless exactly one of user_id or sector_id is set'
        using errcode = 'check_violation',
              schema = 'herald',
              table = 'notifications',
              column = 'audience',
              constraint = 'notifications_audience_required';
    end if;
  end if;
  return new;
end $$;

create trigger notifications_infer_audience
  before insert on herald.notifications
  for each row execute function herald.notifications_infer_audience();

-- Fires before each update: once written, a notification's content is what
-- every client was told, so only retracted_at may change, and only once. This
-- keeps the event log the truth about every notification.
create function herald.notifications_guard_update() returns trigger
language plpgsql as $$
begin
  if (new.id, new.audience, new.user_id, new.sector_id, new.kind, new.importance,
      new.title, new.message, new.action_url, new.data, new.created_at, new.expires_at)
     is distinct from
     (old.id, old.audience, old.user_id, old.sector_id, old.kind, old.importance,
      old.title, old.message, old.action_url, old.data, old.created_at, old.expires_at)
  then
    raise exception 'herald.notifications: only retracted_at may be updated; insert a new notification instead'
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'notifications',
            constraint = 'notifications_immutable';
  end if;
  if old.retracted_at is not null and new.retracted_at is distinct from old.retracted_at then
    raise exception 'herald.notifications: notification % is already retracted', old.id
      using errcode = 'check_violation',
            schema = 'herald',
            table = 'notifications',
            column = 'retracted_at',
            constraint = 'notifications_retraction_final';
  end if;
  return new;
end $$;

create trigger notifications_guard_update
  before update on herald.notifications
  for each row execute function herald.notifications_guard_update();

-- ---------------------------------------------------------------------------
-- read receipts and delivery audit (written by herald)
-- ---------------------------------------------------------------------------
create table herald.notification_seen (
  notification_id uuid not null references herald.notifications (id) on delete cascade,
  user_id         uuid not null references herald.users (id) on delete cascade,
  seen_at         timestamptz not null default now(),
  primary key (notification_id, user_id)
);
-- The primary key serves "has U read N" (the unread anti-join); this one
-- serves per-user audits and the cascade when a user is deleted.
create index notification_seen_user_idx on herald.notification_seen (user_id, seen_at desc);

create table herald.notification_deliveries (
  notification_id uuid not null references herald.notifications (id) on delete cascade,
  user_id         uuid not null references herald.users (id) on delete cascade,
  channel         text not null default 'IN_APP',
  status          text not null,
  sent_at         timestamptz null,
  delivered_at    timestamptz null,
  error           text null,
  primary key (notification_id, user_id, channel),
  constraint notification_deliveries_channel_valid
    check (channel in ('IN_APP', 'PUSH', 'EMAIL', 'SMS')),
  constraint notification_deliveries_status_valid
    check (status in ('SENT', 'DELIVERED', 'FAILED'))
);
create index notification_deliveries_user_idx on herald.notification_deliveries (user_id);

-- ---------------------------------------------------------------------------
-- events: the append-only log herald tails
-- ---------------------------------------------------------------------------
-- Identity ids are taken at insert and commit out of order, so readers never
-- page on id alone: tx (the writing transaction's 64-bit id) tells herald
-- which rows may still appear below what it has read (see src/log/).
create table herald.events (
  id              bigint generated always as identity primary key,
  tx              xid8 not null default pg_current_xact_id(),
  created_at      timestamptz not null default clock_timestamp(),
  kind            text not null,
  notification_id uuid null,
  user_id         uuid null,
  sector_id       uuid null,
  audience        text null,
  payload         jsonb not null,
  constraint events_kind_valid check (kind in (
    'notification.created', 'notification.read', 'notification.retracted', 'user.updated'))
);

-- The tail reads "rows of these transactions, in (tx, id) order".
create index events_tx_id_idx on herald.events (tx, id);
-- Retention prunes the oldest rows first.
create index events_created_at_idx on herald.events (created_at);
-- The creation event of a notification (its eventId in pending pushes).
create index events_notification_idx on herald.events (notification_id, kind)
  where notification_id is not null;

-- The client-facing shape of a notification, as carried by
-- notification.created events and pushed as notification:new.
create function herald.notification_json(n herald.notifications) returns jsonb
language sql stable as $$
  select jsonb_build_object(
    'id', n.id,
    'audience', n.audience,
    'kind', n.kind,
    'importance', n.importance,
    'title', n.title,
    'message', n.message,
    'actionUrl', n.action_url,
    'data', n.data,
    'createdAt', herald.rfc3339(n.created_at),
    'expiresAt', herald.rfc3339(n.expires_at),
    'userId', n.user_id,
    'sectorId', n.sector_id
  )
$$;

-- The event-writing triggers are statement-level with transition tables: an
-- INSERT ... SELECT of 10,000 notifications appends its 10,000 events in one
-- statement, so the NOTIFY trigger on events below fires once for it.

-- Fires after each INSERT statement on notifications.
create function herald.log_notifications_created() returns trigger
language plpgsql as $$
begin
  insert into herald.events (kind, notification_id, user_id, sector_id, audience, payload)
  select 'notification.created', n.id, n.user_id, n.sector_id, n.audience,
         herald.notification_json(n)
    from inserted n;
  return null;
end $$;

create trigger notifications_log_created
  after insert on herald.notifications
  referencing new table as inserted
  for each statement execute function herald.log_notifications_created();

-- Fires after each UPDATE statement on notifications; logs the rows whose
-- retracted_at went from null to a time (the guard above allows nothing else).
create function herald.log_notifications_retracted() returns trigger
language plpgsql as $$
begin
  insert into herald.events (kind, notification_id, user_id, sector_id, audience, payload)
  select 'notification.retracted', n.id, n.user_id, n.sector_id, n.audience,
         jsonb_build_object('notificationId', n.id,
                            'retractedAt', herald.rfc3339(n.retracted_at))
    from updated n
    join previous o on o.id = n.id
   where o.retracted_at is null and n.retracted_at is not null;
  return null;
end $$;

create trigger notifications_log_retracted
  after update on herald.notifications
  referencing old table as previous new table as updated
  for each statement execute function herald.log_notifications_retracted();

-- Fires after each INSERT statement on notification_seen: one read event per
-- receipt, addressed to the reader (all of their devices are told).
create function herald.log_notifications_read() returns trigger
language plpgsql as $$
begin
  insert into herald.events (kind, notification_id, user_id, audience, payload)
  select 'notification.read', s.notification_id, s.user_id, 'user',
         jsonb_build_object('notificationId', s.notification_id,
                            'userId', s.user_id,
                            'readAt', herald.rfc3339(s.seen_at))
    from inserted s;
  return null;
end $$;

create trigger notification_seen_log_read
  after insert on herald.notification_seen
  referencing new table as inserted
  for each statement execute function herald.log_notifications_read();

-- Fires after each UPDATE statement on users; logs the users whose access or
-- rooms changed (deactivation disconnects them, role and sector move them).
create function herald.log_users_updated() returns trigger
language plpgsql as $$
begin
  insert into herald.events (kind, user_id, sector_id, audience, payload)
  select 'user.updated', u.id, u.sector_id, 'user',
         jsonb_build_object('userId', u.id,
                            'isActive', u.is_active,
                            'role', u.role,
                            'sectorId', u.sector_id,
                            'previousRole', o.role,
                            'previousSectorId', o.sector_id)
    from updated u
    join previous o on o.id = u.id
   where (u.is_active, u.role, u.sector_id) is distinct from (o.is_active, o.role, o.sector_id);
  return null;
end $$;

create trigger users_log_updated
  after update on herald.users
  referencing old table as previous new table as updated
  for each statement execute function herald.log_users_updated();

-- Fires after each INSERT statement on events that appended at least one row.
-- The payload is empty on purpose: NOTIFY is a wake-up, never the data (it is
-- lost while the listener reconnects and limited to 8000 bytes), and identical
-- notifications in one transaction are folded into one, so a transaction
-- wakes herald once however many rows it wrote.
create function herald.notify_events() returns trigger
language plpgsql as $$
begin
  if exists (select from appended) then
    perform pg_notify('herald_events', '');
  end if;
  return null;
end $$;

create trigger events_notify
  after insert on herald.events
  referencing new table as appended
  for each statement execute function herald.notify_events();

-- ---------------------------------------------------------------------------
-- the inbox: what is addressed to a user
-- ---------------------------------------------------------------------------
-- Every notification addressed to one user: personal, their sector's, admin
-- broadcasts when they are an admin (roles are herald's configuration, so the
-- caller says), and broadcasts to all. A union of the four partial indexes
-- above; a plain SQL function, so the planner inlines it into each query.
create function herald.inbox(p_user_id uuid, p_sector_id uuid, p_is_admin boolean)
returns setof herald.notifications
language sql stable as $$
  select * from herald.notifications where audience = 'user' and user_id = p_user_id
  union all
  select * from herald.notifications where audience = 'sector' and sector_id = p_sector_id
  union all
  select * from herald.notifications where audience = 'admin' and p_is_admin
  union all
  select * from herald.notifications where audience = 'all'
$$;

-- ---------------------------------------------------------------------------
-- views for DBAs
-- ---------------------------------------------------------------------------
-- One row per (notification, recipient, channel) that herald pushed, with
-- when it was sent, acknowledged and read, and the delays between them.
create view herald.delivery_audit as
select
  d.notification_id,
  d.user_id,
  d.channel,
  n.title,
  n.kind,
  n.audience,
  d.status,
  n.created_at,
  d.sent_at,
  d.delivered_at,
  s.seen_at,
  d.sent_at - n.created_at                        as send_delay,
  d.delivered_at - d.sent_at                      as delivery_delay,
  s.seen_at - coalesce(d.delivered_at, d.sent_at) as read_delay,
  d.error
from herald.notification_deliveries d
join herald.notifications n on n.id = d.notification_id
left join herald.notification_seen s
  on s.notification_id = d.notification_id and s.user_id = d.user_id;
