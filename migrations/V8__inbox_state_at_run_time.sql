-- What herald needs of V7's inbox state when it serves it:
--
--   herald.kind_enabled   the preference rule, once, for every query that
--                         hides a muted kind (counts, the connect push,
--                         lists) and for the Web Push worker;
--   the end of a snooze carries the notification again when it is still
--   unread and live, so every instance pushes it as notification:new from
--   the log alone, and a read ends the snooze: a snoozed notification is
--   always an unread one.

-- How specifically a kind pattern matches a kind, null when it does not:
-- the exact kind ranks above every prefix, a longer `prefix.*` above a
-- shorter one, `*` lowest. `prefix.*` matches kinds that start with
-- `prefix.`: `order.*` matches `order.shipped` and `order.eu.late`, not
-- `order` or `orders.x`. The SQL twin of src/preferences.rs.
create function herald.kind_pattern_rank(p_pattern text, p_kind text)
returns integer
language sql immutable as $$
  select case
           when p_pattern = p_kind then 1000
           when p_pattern = '*' then 0
           when p_pattern like '%.*' and starts_with(p_kind, left(p_pattern, -1))
             then char_length(p_pattern)
         end
$$;

-- Whether a kind matches any of `p_patterns` (a filtered list or view);
-- null patterns: no filter.
create function herald.kind_matches(p_kind text, p_patterns text[])
returns boolean
language sql immutable as $$
  select p_patterns is null
      or exists (select from unnest(p_patterns) p
                  where herald.kind_pattern_rank(p, p_kind) is not null)
$$;

-- Whether `p_user_id` receives notifications of `p_kind` on `p_channel`:
-- the most specific of their patterns that matches decides; no match
-- means enabled, and urgent notifications ignore preferences. Reads one
-- primary-key range of the user's preferences.
create function herald.kind_enabled(p_user_id uuid, p_kind text, p_importance text, p_channel text)
returns boolean
language sql stable as $$
  select p_importance = 'urgent' or coalesce((
    select p.enabled
      from herald.notification_preferences p
     where p.user_id = p_user_id
       and p.channel = p_channel
       and herald.kind_pattern_rank(p.kind_pattern, p_kind) is not null
     order by herald.kind_pattern_rank(p.kind_pattern, p_kind) desc
     limit 1), true)
$$;

-- Whether an unread notification shows in `p_user_id`'s inbox and counts:
-- not snoozed, and its kind not muted for IN_APP.
create function herald.shown(p_notification_id uuid, p_user_id uuid, p_kind text, p_importance text)
returns boolean
language sql stable as $$
  select not exists (select from herald.notification_snoozed z
                      where z.notification_id = p_notification_id and z.user_id = p_user_id)
     and herald.kind_enabled(p_user_id, p_kind, p_importance, 'IN_APP')
$$;

-- The end of a snooze, logged once whoever deletes the row. `woke` tells a
-- wake-up (until has passed) from an early end; `notification` is the
-- notification as notification.created carries it when the user still has
-- it unread and it is live, and null otherwise (it was read, archived,
-- retracted or expired meanwhile, so there is nothing to show again).
create or replace function herald.log_notifications_unsnoozed() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  insert into herald.events (kind, notification_id, user_id, audience, payload)
  select 'notification.unsnoozed', s.notification_id, s.user_id, 'user',
         jsonb_build_object('notificationId', s.notification_id,
                            'userId', s.user_id,
                            'until', herald.rfc3339(s.until),
                            'woke', s.until <= now(),
                            'notification', (
                              select herald.notification_json(n)
                                from herald.notifications n
                               where n.id = s.notification_id
                                 and n.retracted_at is null
                                 and (n.expires_at is null or n.expires_at > now())
                                 and not exists (select from herald.notification_seen r
                                                  where r.notification_id = n.id
                                                    and r.user_id = s.user_id)))
    from unsnoozed s;
  return null;
end $$;

-- A read ends the snooze of what it read: hidden until `until` only ever
-- means unread until then. Named to fire after notification_seen_log_read
-- (triggers fire in name order), so the log has the read, then the end of
-- the snooze.
create function herald.notification_seen_end_snooze() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
begin
  delete from herald.notification_snoozed z
   using born
   where z.notification_id = born.notification_id
     and z.user_id = born.user_id;
  return null;
end $$;

create trigger notification_seen_unsnooze
  after insert on herald.notification_seen
  referencing new table as born
  for each statement execute function herald.notification_seen_end_snooze();

revoke execute on function herald.notification_seen_end_snooze() from public;
