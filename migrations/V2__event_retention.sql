-- Retention of the event log.
--
-- Events older than HERALD_EVENT_RETENTION are deleted in small batches so
-- the log stays small and pruning never holds locks the tail would wait on.
-- A client resuming from a position must learn when events it has not seen
-- were pruned (it gets sync:reset), so the prune records how far it reached:
-- every event of a transaction below pruned_through_tx may be gone.

create table herald.event_retention (
  singleton          boolean primary key default true,
  -- One past the newest transaction whose events were pruned.
  pruned_through_tx  xid8 not null default '0',
  pruned_at          timestamptz null,
  constraint event_retention_singleton check (singleton)
);

insert into herald.event_retention default values;

-- Deletes up to p_batch events older than p_older_than, oldest first, and
-- moves the pruned horizon past them. Returns how many were deleted; call it
-- until it returns less than p_batch.
create function herald.prune_events(p_older_than interval, p_batch integer)
returns integer
language plpgsql as $$
declare
  deleted integer;
  newest xid8;
begin
  with doomed as (
    select id from herald.events
     where created_at < now() - p_older_than
     order by created_at, id
     limit p_batch
     for update skip locked
  ), gone as (
    delete from herald.events e using doomed d where e.id = d.id
    returning e.tx
  )
  select count(*), max(tx) into deleted, newest from gone;
  if deleted > 0 then
    update herald.event_retention
       set pruned_through_tx = greatest(pruned_through_tx, (newest::text::bigint + 1)::text::xid8),
           pruned_at = now();
  end if;
  return deleted;
end $$;
