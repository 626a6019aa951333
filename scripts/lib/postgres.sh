# Shared PostgreSQL bootstrap for scripts/run, scripts/test and scripts/bench.
# Source it; it defines functions and changes nothing by itself.
#
# herald needs a PostgreSQL it can own. These functions find the machine's
# server binaries (installing Debian's package when there are none and we are
# root), create a cluster in a folder of our own, and start or stop it. initdb
# refuses to run as root, so as root the cluster belongs to the `postgres` user
# and must live where that user can reach it; any other user owns its cluster.
# Clusters listen on 127.0.0.1 only, with no Unix socket (a socket path inside
# a deep checkout can exceed the kernel's 107-byte limit).

pg_log() { printf '%s\n' "$*" >&2; }

# Prints the bin directory of the newest installed PostgreSQL server.
pg_bindir() {
  local dir
  if command -v pg_config >/dev/null 2>&1; then
    dir=$(pg_config --bindir 2>/dev/null)
    if [ -x "$dir/postgres" ] && [ -x "$dir/initdb" ]; then
      printf '%s\n' "$dir"
      return 0
    fi
  fi
  dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
  if [ -n "$dir" ] && [ -x "$dir/postgres" ]; then
    printf '%s\n' "$dir"
    return 0
  fi
  return 1
}

# Makes sure server binaries exist; installs Debian's postgresql when root.
pg_ensure_binaries() {
  PG_BIN=$(pg_bindir) && return 0
  if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    pg_log "error: no PostgreSQL server binaries found; install PostgreSQL (15 or later) or set DATABASE_URL"
    return 1
  fi
  pg_log "installing PostgreSQL from Debian's packages..."
  # Keep the package from starting a cluster of its own: herald runs its own.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
  local rc=$?
  rm -f /usr/sbin/policy-rc.d
  [ $rc -eq 0 ] || { pg_log "error: installing postgresql failed"; return 1; }
  PG_BIN=$(pg_bindir) || { pg_log "error: postgresql installed but no server binaries found"; return 1; }
}

# Runs a PostgreSQL binary as the cluster's owner (as root from /, since
# postgres may not be allowed into the current directory).
pg_as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# Prints a TCP port that nothing listens on.
pg_free_port() {
  python3 - <<'PY'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# As root, makes sure the `postgres` user exists (it owns root's clusters).
pg_ensure_owner() {
  [ "$(id -u)" -eq 0 ] || return 0
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
}

# pg_owner_can_enter DIR: can the cluster's owner reach DIR? Always, unless
# we are root and DIR lies under a folder `postgres` may not traverse (a
# home directory of mode 700, such as /root).
pg_owner_can_enter() {
  [ "$(id -u)" -eq 0 ] || return 0
  pg_ensure_owner
  runuser -u postgres -- test -x "$1" 2>/dev/null
}

# pg_data_dir STATE_DIR: where the cluster kept for STATE_DIR (a folder of
# the caller's, such as a checkout's .herald) lives: STATE_DIR/pg when its
# owner can reach it; otherwise (root, checkout out of postgres's reach)
# /var/lib/herald/NAME-HASH/pg, which the caller links from STATE_DIR/pg. An
# existing link is followed, so a moved checkout keeps its cluster.
pg_data_dir() {
  local state=$1 name hash
  if [ -L "$state/pg" ]; then
    readlink "$state/pg"
  elif pg_owner_can_enter "$state"; then
    printf '%s\n' "$state/pg"
  else
    name=$(basename "$(dirname "$state")" | tr -c 'A-Za-z0-9._\n-' '_')
    hash=$(printf '%s' "$state" | sha256sum | cut -c1-12)
    printf '%s\n' "${HERALD_PG_ROOT:-/var/lib/herald}/$name-$hash/pg"
  fi
}

# pg_init DATADIR: creates a cluster in DATADIR unless one is there already.
pg_init() {
  local data=$1
  [ -f "$data/PG_VERSION" ] && return 0
  (umask 022 && mkdir -p "$data")
  if [ "$(id -u)" -eq 0 ]; then
    pg_ensure_owner
    chown postgres: "$data"
    chmod 700 "$data"
    pg_owner_can_enter "$data" || {
      pg_log "error: the postgres user cannot reach $data; put the cluster where it can"; return 1; }
  fi
  pg_as_owner "$PG_BIN/initdb" --pgdata="$data" --username=postgres --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8 >"$data.initdb.log" 2>&1 || {
    pg_log "error: initdb failed:"; cat "$data.initdb.log" >&2; return 1; }
}

# pg_start DATADIR PORT: starts the cluster on 127.0.0.1:PORT and waits for it.
pg_start() {
  local data=$1 port=$2
  pg_as_owner "$PG_BIN/pg_ctl" --pgdata="$data" --wait --timeout=60 \
    --log="$data/server.log" \
    -o "-c port=$port -c listen_addresses=127.0.0.1 -c unix_socket_directories='' -c max_connections=200 -c fsync=${PG_FSYNC:-on}" \
    start >/dev/null || {
    pg_log "error: PostgreSQL did not start; its log:"; tail -n 30 "$data/server.log" >&2; return 1; }
}

# pg_stop DATADIR: fast shutdown; quiet when nothing runs.
pg_stop() {
  local data=$1
  [ -f "$data/postmaster.pid" ] || return 0
  pg_as_owner "$PG_BIN/pg_ctl" --pgdata="$data" --mode=fast --wait --timeout=60 stop >/dev/null 2>&1 || true
}

# pg_running DATADIR: is a server running on this cluster?
pg_running() {
  pg_as_owner "$PG_BIN/pg_ctl" --pgdata="$1" status >/dev/null 2>&1
}

# pg_port DATADIR: the port a running cluster listens on.
pg_port() {
  sed -n 4p "$1/postmaster.pid"
}

# pg_createdb PORT NAME: creates a database if it does not exist.
pg_createdb() {
  local port=$1 name=$2
  if ! "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
      "select 1 from pg_database where datname = '$name'" | grep -q 1; then
    "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres "$name"
  fi
}
