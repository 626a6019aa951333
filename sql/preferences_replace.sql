-- PUT /api/preferences and preferences.set {reset: true}: a user's whole
-- list replaced by $2..$4 (empty arrays: removed), in one statement, so
-- the list others see moves from the old one to the new one.
-- $1 user_id, $2 kind patterns, $3 channels, $4 enabled
with wanted as (
  select * from unnest($2::text[], $3::text[], $4::boolean[]) as w(kind_pattern, channel, enabled)
), removed as (
  delete from herald.notification_preferences p
   where p.user_id = $1
     and not exists (select from wanted w
                      where w.kind_pattern = p.kind_pattern and w.channel = p.channel)
)
insert into herald.notification_preferences (user_id, kind_pattern, channel, enabled)
select $1, kind_pattern, channel, enabled from wanted
on conflict (user_id, kind_pattern, channel)
do update set enabled = excluded.enabled, updated_at = now()
 where notification_preferences.enabled is distinct from excluded.enabled
