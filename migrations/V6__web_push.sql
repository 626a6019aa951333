-- Web Push: the PUSH channel, for notifications that no socket received in
-- time (docs/operators.md, "Web Push").
--
--   push_subscriptions  the browsers each user subscribed (PushSubscription);
--   push_due            notifications inserted while anyone has a
--                       subscription, waiting for HERALD_PUSH_DELAY to pass;
--   push_sends          one row per (notification, subscription) herald
--                       decided to push: the claim that makes each push
--                       happen once across instances and restarts.
--
-- Every decision is a row: an instance claims a due notification or a send
-- with FOR UPDATE SKIP LOCKED and records the outcome in the same
-- transaction as the next step, so no instance's memory decides anything.

create table herald.push_subscriptions (
  id           uuid primary key default gen_random_uuid(),
  user_id      uuid not null references herald.users (id) on delete cascade,
  endpoint     text not null,
  p256dh       text not null,
  auth         text not null,
  created_at   timestamptz not null default now(),
  last_used_at timestamptz,
  failures     int not null default 0,
  constraint push_subscriptions_endpoint_unique unique (endpoint),
  constraint push_subscriptions_endpoint_length
    check (char_length(endpoint) between 1 and 2048),
  constraint push_subscriptions_endpoint_scheme
    check (endpoint like 'https://%' or endpoint like 'http://%'),
  -- base64url of a 65-byte uncompressed P-256 point: 87 characters.
  constraint push_subscriptions_p256dh_length check (char_length(p256dh) = 87),
  -- base64url of 16 bytes: 22 characters.
  constraint push_subscriptions_auth_length check (char_length(auth) = 22),
  constraint push_subscriptions_failures_valid check (failures >= 0)
);
create index push_subscriptions_user_idx on herald.push_subscriptions (user_id);

create table herald.push_due (
  notification_id uuid primary key references herald.notifications (id) on delete cascade,
  visible_at      timestamptz not null default now()
);
create index push_due_visible_idx on herald.push_due (visible_at);

create table herald.push_sends (
  notification_id uuid not null references herald.notifications (id) on delete cascade,
  subscription_id uuid not null references herald.push_subscriptions (id) on delete cascade,
  user_id         uuid not null references herald.users (id) on delete cascade,
  state           text not null default 'pending',
  -- When the next attempt may start (a retry honours Retry-After).
  due_at          timestamptz not null default now(),
  -- After this the push service would drop it anyway: no attempt starts later.
  deadline        timestamptz not null,
  attempts        int not null default 0,
  claimed_at      timestamptz,
  sent_at         timestamptz,
  error           text,
  -- The dismiss: 'due' once a sent push's notification is read by its user
  -- or retracted, then claimed ('sending') and answered.
  dismiss_state   text,
  constraint push_sends_pkey primary key (notification_id, subscription_id),
  constraint push_sends_state_valid
    check (state in ('pending', 'sending', 'sent', 'failed', 'skipped')),
  constraint push_sends_dismiss_state_valid
    check (dismiss_state is null or dismiss_state in ('due', 'sending', 'sent', 'failed')),
  constraint push_sends_attempts_valid check (attempts >= 0)
);
create index push_sends_pending_idx on herald.push_sends (due_at) where state = 'pending';
create index push_sends_sending_idx on herald.push_sends (claimed_at) where state = 'sending';
create index push_sends_dismiss_due_idx on herald.push_sends (notification_id)
  where dismiss_state = 'due';
create index push_sends_notification_user_idx on herald.push_sends (notification_id, user_id);
create index push_sends_user_idx on herald.push_sends (user_id);
create index push_sends_subscription_idx on herald.push_sends (subscription_id);

-- A new notification waits in push_due when anyone could receive a push at
-- all; with no subscription in the table there is nothing to decide later.
-- Once per statement, so a producer's batch insert costs one extra insert.
create function herald.notifications_queue_push() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  if exists (select from herald.push_subscriptions) then
    insert into herald.push_due (notification_id, visible_at)
    select born.id, born.created_at from born
    on conflict do nothing;
  end if;
  return null;
end $$;

create trigger notifications_queue_push
  after insert on herald.notifications
  referencing new table as born
  for each statement execute function herald.notifications_queue_push();

-- A read or a retraction of a notification that was pushed makes its
-- dismiss due; a send still under way checks the same when it records its
-- answer. One indexed update per statement, and none when nothing was pushed.
create function herald.notification_seen_dismiss_push() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  update herald.push_sends p
     set dismiss_state = 'due'
    from born
   where p.notification_id = born.notification_id
     and p.user_id = born.user_id
     and p.state = 'sent'
     and p.dismiss_state is null;
  return null;
end $$;

create trigger notification_seen_dismiss_push
  after insert on herald.notification_seen
  referencing new table as born
  for each statement execute function herald.notification_seen_dismiss_push();

create function herald.notifications_retracted_dismiss_push() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  update herald.push_sends p
     set dismiss_state = 'due'
    from updated
    join previous on previous.id = updated.id
   where p.notification_id = updated.id
     and updated.retracted_at is not null
     and previous.retracted_at is null
     and p.state = 'sent'
     and p.dismiss_state is null;
  return null;
end $$;

create trigger notifications_retracted_dismiss_push
  after update on herald.notifications
  referencing old table as previous new table as updated
  for each statement execute function herald.notifications_retracted_dismiss_push();
