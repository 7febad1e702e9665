#!/usr/bin/env bash
# Re-runs every experiment the README quotes, from a clean tree, one after
# the other (never two loads at once on a small machine), into results/.
# About an hour on 2 cores. The runs refuse nothing on a dirty tree, but
# mark it; this script refuses to start on one.
#
# usage: scripts/readme-results.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "$(git status --porcelain --untracked-files=normal -- . ':!results')" ]; then
  echo "readme-results: the tree has uncommitted changes; commit first" >&2
  exit 1
fi
stamp=$(date -u +%Y%m%dT%H%M%S)
lab() { cargo run --quiet --release -p lab -- "$@"; }

cargo build --quiet --release -p lab
# The default matrix, every kind, closed and open loop, three times over.
lab run --repeat 3 --name "$stamp-default"
# What each piece of prefork's per-request machinery costs, against bare.
scripts/machinery-cost.sh 5 3s
# How each --balance policy spreads the work over the workers.
lab balance --name "$stamp-balance"
# What CPU work on an event loop does to the latency of everything else.
lab block --name "$stamp-block"
# Splitting one request across cores: threads, rayon, processes.
lab split --name "$stamp-split"
# Streams vs buffers: what slow clients cost the server's memory.
lab stream --name "$stamp-stream"
# C10K: what an idle connection costs each model.
lab conns --name "$stamp-conns"
# What moving a payload between two workers costs, per transport.
lab ipc --name "$stamp-ipc"
# What pinning the server and the load generator to disjoint CPUs changes.
lab run --pin on --models bare,prefork,threadpool,node-cluster,node-threads \
  --workloads noop,cpu --workers 1,2 --duration 3s --name "$stamp-pinned"
# Crash isolation, every kind and fault; then prefork with a shared socket.
lab crash --name "$stamp-crash"
lab crash --models prefork --balance shared --name "$stamp-crash-prefork-shared"
# The dataset memory lesson: shared before the fork, or built per worker.
for load in before-fork per-worker; do
  lab run --models prefork,threadpool,node-cluster,node-threads --workloads noop \
    --dataset-mb 64 --dataset-load "$load" --duration 2s --warmup 0 \
    --name "$stamp-dataset-64mb-$load"
done
# The no-op throughput ratios, repeated.
scripts/noop-ratios.sh 5 3s
