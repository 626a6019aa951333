-- A user's preferences, in the order preferences.updated lists them.
-- $1 user_id
select kind_pattern, channel, enabled
  from herald.notification_preferences
 where user_id = $1
 order by kind_pattern, channel
