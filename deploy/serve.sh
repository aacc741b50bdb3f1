#!/usr/bin/env bash
# Two resattn app processes behind nginx (deploy/nginx.conf): the class opens
# http://<this machine>:8600. Ctrl-C stops everything. Extra arguments go to both
# Streamlit processes (e.g. --runner.postScriptGC=false, see docs/deploy.md).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN=deploy/run
mkdir -p "$RUN/tmp"
pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; wait; }
trap cleanup EXIT INT TERM
for port in 8601 8602; do
    "$PY" -m streamlit run app.py --server.port "$port" --server.address 127.0.0.1 "$@" \
        > "$RUN/replica-$port.log" 2>&1 &
    pids+=($!)
    echo $! > "$RUN/replica-$port.pid"  # for scripts/load_test.py --pid
done
for port in 8601 8602; do
    until curl -fs "http://127.0.0.1:$port/_stcore/health" > /dev/null; do sleep 1; done
done
echo "replicas: ${pids[*]} (logs in $RUN/); nginx on http://0.0.0.0:8600" >&2
nginx -p "$PWD/$RUN" -c "$PWD/deploy/nginx.conf" &
pids+=($!)
wait
