#!/usr/bin/env bash
# Two resattn app processes behind nginx (deploy/nginx.conf): the class opens
# http://<this machine>:8600. Ctrl-C stops everything. Extra arguments go to both
# Streamlit processes (e.g. --server.maxUploadSize=20; see docs/deploy.md).
# `deploy/serve.sh --prepare` only makes nginx's copy of the frontend and exits (the test does);
# RESATTN_RUN_DIR moves the run folder (pids, logs, the copy) from deploy/run.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RUN=$(realpath -m "${RESATTN_RUN_DIR:-deploy/run}")
mkdir -p "$RUN/tmp"
# Streamlit's frontend files, for nginx to serve (deploy/nginx.conf, location /static/): a copy
# with a .gz beside each text file, remade when the installed Streamlit changes.
STATIC=$("$PY" -c 'import os, streamlit; print(os.path.join(os.path.dirname(streamlit.__file__), "static", "static"))')
VERSION=$("$PY" -c 'import streamlit; print(streamlit.__version__)')
if [ "$(cat "$RUN/static.version" 2>/dev/null)" != "$VERSION" ]; then
    rm -rf "$RUN/static" && cp -r "$STATIC" "$RUN/static"
    find "$RUN/static" -type f \( -name '*.js' -o -name '*.css' -o -name '*.json' -o -name '*.svg' -o -name '*.map' \) \
        -exec gzip -k -6 {} +
    echo "$VERSION" > "$RUN/static.version"
fi
if [ "${1:-}" = "--prepare" ]; then exit 0; fi
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
nginx -p "$RUN" -c "$PWD/deploy/nginx.conf" &
pids+=($!)
wait
