-- The preference rule and what shows, as functions the planner inlines.
--
-- V8's herald.kind_enabled and herald.shown are scalar SQL functions whose
-- bodies hold subqueries, which PostgreSQL never inlines: each row a count
-- or a page looks at paid a function call of its own. On 5,000 users and
-- 202,200 notifications, a user's unread count took 49 ms with them and
-- 1.1 ms before V8. A set-returning SQL function of one SELECT is inlined
-- into the query that calls it, so the same rule costs a subplan per row
-- instead: herald.kind_setting and herald.visibility below, which herald's
-- queries use. kind_enabled and shown stay, now reading them, for queries
-- by hand; the rule itself is written once, in kind_setting.

-- One row: whether `p_user_id` receives notifications of `p_kind` on
-- `p_channel`. The most specific of their patterns that matches decides; no
-- match means enabled, and urgent notifications ignore preferences. Reads
-- one primary-key range of the user's preferences.
create function herald.kind_setting(p_user_id uuid, p_kind text, p_importance text, p_channel text)
returns table (enabled boolean)
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

-- One row: whether an unread notification shows in `p_user_id`'s inbox and
-- counts: not snoozed, and its kind not muted for IN_APP.
create function herald.visibility(p_notification_id uuid, p_user_id uuid, p_kind text, p_importance text)
returns table (shown boolean)
language sql stable as $$
  select not exists (select from herald.notification_snoozed z
                      where z.notification_id = p_notification_id and z.user_id = p_user_id)
     and (select enabled from herald.kind_setting(p_user_id, p_kind, p_importance, 'IN_APP'))
$$;

create or replace function herald.kind_enabled(p_user_id uuid, p_kind text, p_importance text, p_channel text)
returns boolean
language sql stable as $$
  select enabled from herald.kind_setting(p_user_id, p_kind, p_importance, p_channel)
$$;

create or replace function herald.shown(p_notification_id uuid, p_user_id uuid, p_kind text, p_importance text)
returns boolean
language sql stable as $$
  select shown from herald.visibility(p_notification_id, p_user_id, p_kind, p_importance)
$$;
