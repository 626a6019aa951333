-- One step of the tail: the current snapshot, and every event that became
-- visible since the previous one ($1, a pg_snapshot in text form), in
-- (tx, id) order. Those are exactly the rows of transactions that were in
-- progress at $1 or began after it; both branches are index scans on
-- events_tx_id_idx. One statement, so the rows and the snapshot agree.
select snap::text as snapshot,
       e.id, e.tx::text as tx, e.created_at, e.kind,
       e.notification_id, e.user_id, e.sector_id, e.audience, e.payload
  from pg_current_snapshot() as snap
  left join lateral (
    select * from herald.events
     where tx >= pg_snapshot_xmax($1::text::pg_snapshot)
    union all
    select * from herald.events
     where tx = any (array(select pg_snapshot_xip($1::text::pg_snapshot)))
  ) as e on true
 order by e.tx, e.id
