#!/usr/bin/env bash
# Repeats the no-op cells N times and prints min / median / max of the two
# throughput ratios the project's targets are about:
#   prefork (2 workers) / bare (2 workers)       target: >= 1
#   threadpool (1 thread) / prefork (1 worker)   target: >= 0.9
# One run is too noisy on a small machine whose load generator shares the
# cores; this is how the README's figures were made.
#
# usage: scripts/noop-ratios.sh [RUNS=5] [DURATION=3s]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
duration=${2:-3s}
out="results/$(date -u +%Y%m%dT%H%M%S)-noop-repeats"

cargo build --quiet --release -p lab
for i in $(seq 1 "$runs"); do
  echo "run $i of $runs" >&2
  cargo run --quiet --release -p lab -- run --models bare,prefork,threadpool \
    --workloads noop --workers 1,2 --duration "$duration" \
    --out "$out" --name "run$i" > /dev/null
done

# cells.csv: model,workload,workers,...,status,rps,...
for run in "$out"/run*/cells.csv; do
  awk -F, '$5 == "ok" { rps[$1 "/" $3] = $6 }
    END { printf "%f %f\n", rps["prefork/2"] / rps["bare/2"], rps["threadpool/1"] / rps["prefork/1"] }' "$run"
done | awk '
  { a[NR] = $1; b[NR] = $2 }
  function report(name, v, n,   i, j, t) {
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
    printf "%-28s min %.3f  median %.3f  max %.3f\n", name, v[1], (n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2), v[n]
  }
  END { report("prefork-2 / bare-2", a, NR); report("threadpool-1 / prefork-1", b, NR) }'
echo "runs in $out" >&2
