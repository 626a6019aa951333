-- Housekeeping for `herald prune --read-older-than`: removes notifications
-- nobody needs any more, with their read receipts and delivery rows.
--
-- A notification goes once it is older than p_older_than and
--   - it is personal and its user read it more than p_older_than ago, or
--   - it was retracted, or it expired, more than p_older_than ago.
-- Unread personal notifications and live broadcasts are never removed (a
-- broadcast's read state is per user). Up to p_batch notifications per call;
-- call until it reports fewer.

create function herald.prune_notifications(p_older_than interval, p_batch integer)
returns table (notifications integer, receipts integer, deliveries integer)
language plpgsql as $$
declare
  cutoff timestamptz := now() - p_older_than;
  doomed uuid[];
begin
  select array_agg(id) into doomed
    from (
      select n.id
        from herald.notifications n
       where n.created_at < cutoff
         and (
           (n.audience = 'user' and exists (
              select from herald.notification_seen s
               where s.notification_id = n.id and s.user_id = n.user_id and s.seen_at < cutoff))
           or n.retracted_at < cutoff
           or n.expires_at < cutoff)
       order by n.created_at
       limit p_batch
       for update skip locked
    ) candidates;
  if doomed is null then
    return query select 0, 0, 0;
    return;
  end if;
  delete from herald.notification_seen where notification_id = any (doomed);
  get diagnostics receipts = row_count;
  delete from herald.notification_deliveries where notification_id = any (doomed);
  get diagnostics deliveries = row_count;
  delete from herald.notifications where id = any (doomed);
  get diagnostics notifications = row_count;
  return next;
end $$;
