-- The events a connecting socket's catch-up decides, read from the log when
-- the tail's recent steps no longer reach back to its snapshot: visible in
-- $5 (the tail's position), not seen from position ($1 base, $2 step end,
-- $3 tx, $4 id), in (tx, id) order. $6 user_id, $7 sector_id, $8 is_admin.
-- Unlike a replay (sql/events_replay.sql) this keeps the changes to the
-- user: a catch-up applies them as it goes (a move changes which rooms the
-- events after it reach, a deactivation ends it). With $9 (wide) every
-- sector's and the admin room's events are read too, for a catch-up in
-- which the user moved; the caller decides each against the rooms the
-- user had at that event. The scan is the replay's.
select e.id, e.tx::text as tx, e.created_at, e.kind,
       e.notification_id, e.user_id, e.sector_id, e.audience, e.payload
  from (
    select * from herald.events where tx >= pg_snapshot_xmax($1::text::pg_snapshot)
    union all
    select e.*
      from pg_snapshot_xip($1::text::pg_snapshot) as x(tx),
           lateral (select * from herald.events where tx = x.tx offset 0) as e
  ) as e
 where pg_visible_in_snapshot(e.tx, $5::text::pg_snapshot)
   and not (pg_visible_in_snapshot(e.tx, $2::text::pg_snapshot)
            and (e.tx, e.id) <= ($3::text::xid8, $4::bigint))
   and ((e.user_id = $6 and e.audience = 'user')
        or (e.audience = 'sector' and ($9 or e.sector_id = $7))
        or (e.audience = 'admin' and ($8 or $9))
        or e.audience = 'all')
 order by e.tx, e.id
