-- preferences.set: one preference of a user, written or changed.
-- $1 user_id, $2 kind pattern, $3 channel, $4 enabled
insert into herald.notification_preferences (user_id, kind_pattern, channel, enabled)
values ($1, $2, $3, $4)
on conflict (user_id, kind_pattern, channel)
do update set enabled = excluded.enabled, updated_at = now()
 where notification_preferences.enabled is distinct from excluded.enabled
