-- One step of the tail: the current snapshot, and every event that became
-- visible since the previous snapshot ($1, in pg_snapshot text form), in
-- (tx, id) order. Those are exactly the rows of transactions that began
-- after it (tx >= its xmax) or were in progress then (its xip list). Both
-- branches are index scans on events_tx_id_idx: the second looks each
-- in-progress transaction up on its own (`offset 0` keeps the planner from
-- turning it into a hash join over the whole table when bulk inserts make
-- a single tx look common). One statement, so rows and snapshot agree.
select snap::text as snapshot,
       e.id, e.tx::text as tx, e.created_at, e.kind,
       e.notification_id, e.user_id, e.sector_id, e.audience, e.payload
  from pg_current_snapshot() as snap
  left join lateral (
    select * from herald.events where tx >= pg_snapshot_xmax($1::text::pg_snapshot)
    union all
    select e.*
      from pg_snapshot_xip($1::text::pg_snapshot) as x(tx),
           lateral (select * from herald.events where tx = x.tx offset 0) as e
  ) as e on true
 order by e.tx, e.id
