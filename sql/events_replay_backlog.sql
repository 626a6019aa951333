-- How far behind a resuming client is, decided before any event is loaded:
-- of the log entries its base snapshot ($1) did not see and that are
-- visible in $5, `unseen` counts at most $9 (the scan stops there), and
-- `addressed` how many of those events_replay.sql would send (same
-- filters: not seen within the step ($2, $3, $4), addressed to user $6,
-- sector $7, admin $8, not user.updated). It reads routing columns only,
-- never a payload, so a forged or ancient position costs at most $9 index
-- entries however long the log is.
-- The audience filter is the SQL twin of src/audience.rs (Audience::reaches),
-- as is herald.inbox(); tests/api/audience.rs checks that they agree.
select count(*) as unseen,
       count(*) filter (
         where not (pg_visible_in_snapshot(e.tx, $2::text::pg_snapshot)
                    and (e.tx, e.id) <= ($3::text::xid8, $4::bigint))
           and ((e.user_id = $6 and e.audience = 'user')
                or (e.audience = 'sector' and e.sector_id = $7)
                or (e.audience = 'admin' and $8)
                or e.audience = 'all')
           and e.kind <> 'user.updated'
       ) as addressed
  from (
    select e.tx, e.id, e.kind, e.user_id, e.sector_id, e.audience
      from (
        select tx, id, kind, user_id, sector_id, audience
          from herald.events where tx >= pg_snapshot_xmax($1::text::pg_snapshot)
        union all
        select e.*
          from pg_snapshot_xip($1::text::pg_snapshot) as x(tx),
               lateral (select tx, id, kind, user_id, sector_id, audience
                          from herald.events where tx = x.tx offset 0) as e
      ) as e
     where pg_visible_in_snapshot(e.tx, $5::text::pg_snapshot)
     limit $9
  ) as e
