-- How far the push worker is behind: due notifications not decided yet, and
-- the age of the oldest send whose time has come but that no instance has
-- claimed. The lag in /metrics.
-- $1 delay (seconds)
select (select count(*) from herald.push_due
         where visible_at <= now() - make_interval(secs => $1)) as undecided,
       (select count(*) from herald.push_sends
         where state = 'pending' and due_at <= now()) as waiting,
       coalesce((select extract(epoch from now() - min(due_at)) from herald.push_sends
                  where state = 'pending' and due_at <= now()), 0)::float8 as lag_seconds
