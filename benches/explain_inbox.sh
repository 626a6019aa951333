#!/usr/bin/env bash
# The plans behind docs/dbas.md's "Which index serves which query" for the
# inbox-state queries: builds a database of 5,000 users, 202,200
# notifications (40 per user, 2,000 to sectors, 200 to everyone), 140,000
# receipts, 50,000 archives, 10,000 snoozes and 15,000 preferences, then
# prints EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) of each query, run as
# herald runs it (the statements in sql/, with one user's parameters).
# Usage: benches/explain_inbox.sh PG_PORT  (a cluster whose postgres user
# needs no password, such as the one scripts/test or scripts/run starts).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/postgres.sh
PG_BIN=$(pg_bindir)
port=$1
db=herald_explain
psql() { "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -X -q -v ON_ERROR_STOP=1 "$@"; }
psql -d postgres -c "drop database if exists $db" -c "create database $db"
HERALD_BIN=${HERALD_BIN:-target/debug/herald}
DATABASE_URL="postgres://postgres@127.0.0.1:$port/$db" "$HERALD_BIN" migrate >/dev/null

psql -d "$db" <<'SQL'
insert into herald.users (id, name, sector_id)
select gen_random_uuid(), 'u' || i, ('00000000-0000-0000-0000-0000000000' || lpad((i % 50)::text, 2, '0'))::uuid
  from generate_series(1, 5000) i;
insert into herald.notifications (user_id, title, kind, importance, created_at)
select u.id, 'n', (array['order.shipped', 'order.late', 'billing.due', 'mention.pr'])[1 + g % 4],
       (array['low', 'normal', 'high', 'urgent'])[1 + g % 4], now() - g * interval '1 minute'
  from herald.users u, generate_series(1, 40) g;
insert into herald.notifications (audience, sector_id, title, kind, created_at)
select 'sector', ('00000000-0000-0000-0000-0000000000' || lpad((g % 50)::text, 2, '0'))::uuid, 's',
       'order.shipped', now() - g * interval '1 minute'
  from generate_series(1, 2000) g;
insert into herald.notifications (audience, title, created_at)
select 'all', 'b', now() - g * interval '1 minute' from generate_series(1, 200) g;
-- 28 receipts per user; the 10 oldest of them archived, 2 unread ones snoozed.
insert into herald.notification_seen (notification_id, user_id)
select id, user_id from (
  select n.id, n.user_id, row_number() over (partition by n.user_id order by n.created_at) r
    from herald.notifications n where n.audience = 'user') x
 where r <= 28;
insert into herald.notification_archived (notification_id, user_id)
select id, user_id from (
  select n.id, n.user_id, row_number() over (partition by n.user_id order by n.created_at) r
    from herald.notifications n where n.audience = 'user') x
 where r <= 10;
insert into herald.notification_snoozed (notification_id, user_id, until)
select id, user_id, now() + interval '1 hour' from (
  select n.id, n.user_id, row_number() over (partition by n.user_id order by n.created_at desc) r
    from herald.notifications n where n.audience = 'user') x
 where r <= 2;
insert into herald.notification_preferences (user_id, kind_pattern, channel, enabled)
select u.id, p.pattern, p.channel, false
  from herald.users u,
       (values ('mention.*', 'IN_APP'), ('billing.*', 'PUSH'), ('order.late', 'IN_APP')) p(pattern, channel);
vacuum analyze;
SQL

user=$(psql -d "$db" -Atc "select id from herald.users order by name limit 1")
sector=$(psql -d "$db" -Atc "select sector_id from herald.users where id = '$user'")
archived=$(psql -d "$db" -Atc "select notification_id from herald.notification_archived where user_id = '$user' limit 1")
unread=$(psql -d "$db" -Atc "select n.id from herald.inbox('$user', '$sector', false) n
  where not exists (select from herald.notification_seen s where s.notification_id = n.id and s.user_id = '$user')
    and not exists (select from herald.notification_snoozed z where z.notification_id = n.id and z.user_id = '$user')
  limit 1")

# explain NAME FILE ARGS: the statement in FILE, prepared, explained with ARGS.
explain() {
  local name=$1 file=$2 call=q
  [ -n "$3" ] && call="q($3)"
  echo "== $name ($file)"
  # Rolled back: the writes are explained, not kept.
  psql -d "$db" <<SQL
set jit = off;
begin;
prepare q as $(cat "$file");
explain (analyze, costs off, timing off) execute $call;
rollback;
SQL
}
inbox="'$user', '$sector', false"
explain "the inbox, first page" sql/inbox_list.sql "$inbox, null, null, false, 21, 'inbox', null, null"
explain "the Archived tab" sql/inbox_list.sql "$inbox, null, null, false, 21, 'archived', null, null"
explain "the snoozed ones" sql/inbox_list.sql "$inbox, null, null, false, 21, 'snoozed', null, null"
explain "a filtered page" sql/inbox_list.sql "$inbox, null, null, true, 21, 'inbox', array['order.*'], array['high', 'urgent']"
explain "a view's count" sql/inbox_view_count.sql "$inbox, array['order.*'], null"
explain "the unread count" sql/inbox_unread_count.sql "$inbox"
explain "mark.archived" sql/inbox_archive.sql "$inbox, '$unread'"
explain "archive.all_read" sql/inbox_archive_read.sql "$inbox"
explain "mark.snoozed" sql/inbox_snooze.sql "$inbox, '$unread', now() + interval '1 hour'"
explain "the next wake-up" sql/snoozes_next.sql ""
explain "the wake-up" sql/snoozes_wake.sql "100"
explain "preferences.get" sql/preferences_list.sql "'$user'"
