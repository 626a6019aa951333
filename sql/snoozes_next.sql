-- How long until the next snooze ends, in microseconds by the database's
-- clock (negative: already due), so the wait for it does not depend on
-- herald's clock; null when nothing is snoozed. notification_snoozed_until_idx.
select (extract(epoch from min(until) - now()) * 1000000)::bigint as wait_us
  from herald.notification_snoozed
