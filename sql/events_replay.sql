-- The events a user has not been sent: addressed to them (by their current
-- user, sector and admin rooms), visible in $5 (the snapshot the replay is
-- taken at), and not seen from position ($1 base, $2 step end, $3 tx, $4
-- id; see src/db/position.rs), in (tx, id) order.
-- $6 user_id, $7 sector_id, $8 is_admin, $9 at most this many rows
-- The audience filter is the SQL twin of src/audience.rs (Audience::reaches),
-- as is herald.inbox(); tests/api/audience.rs checks that they agree.
-- What the base snapshot did not see is exactly the rows of transactions
-- in its xip list or at or above its xmax, so the scan starts there (as in
-- events_step.sql) and never walks rows the client has seen, however far
-- below its xmax the base's xmin lies. sql/events_replay_backlog.sql
-- counts the same rows without reading them and must keep these filters.
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
        or (e.audience = 'sector' and e.sector_id = $7)
        or (e.audience = 'admin' and $8)
        or e.audience = 'all')
   and e.kind <> 'user.updated'
 order by e.tx, e.id
 limit $9
