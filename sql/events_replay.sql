-- The events a user has not been sent: addressed to them (by their current
-- user, sector and admin rooms), visible in $5 (the snapshot the replay is
-- taken at), and not seen from position ($1 base, $2 step end, $3 tx, $4
-- id; see src/log/position.rs), in (tx, id) order.
-- $6 user_id, $7 sector_id, $8 is_admin, $9 at most this many rows
select e.id, e.tx::text as tx, e.created_at, e.kind,
       e.notification_id, e.user_id, e.sector_id, e.audience, e.payload
  from herald.events e
 where e.tx >= pg_snapshot_xmin($1::text::pg_snapshot)
   and pg_visible_in_snapshot(e.tx, $5::text::pg_snapshot)
   and not pg_visible_in_snapshot(e.tx, $1::text::pg_snapshot)
   and not (pg_visible_in_snapshot(e.tx, $2::text::pg_snapshot)
            and (e.tx, e.id) <= ($3::text::xid8, $4::bigint))
   and ((e.user_id = $6 and e.audience = 'user')
        or (e.audience = 'sector' and e.sector_id = $7)
        or (e.audience = 'admin' and $8)
        or e.audience = 'all')
   and e.kind <> 'user.updated'
 order by e.tx, e.id
 limit $9
