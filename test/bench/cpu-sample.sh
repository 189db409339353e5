#!/bin/bash
# CPU accounting beside a bench run (test/bench/HISTORY.md, "Where the misses come from"):
#   bash test/bench/cpu-sample.sh > cpu.txt &  npm run bench -- --scale 1; kill %1
# Bash builtins only (no process started per sample, so the sampler itself stays near 1 % of a core). Every 0.5 s one line: time, the machine's busy ticks (user+nice+system+irq+softirq+steal, cumulative, 1/100 s),
# and the cumulative ticks of the live node processes (the CLI, its local S3 server). The difference of two lines at
# the bench's timestamps (CreateSchema done … the last migrate step done, PlanVerify … Verify done, a floor's start …
# its total) is the CPU that phase used, in hundredths of core-seconds; busy minus node is PostgreSQL's.
while true; do
  read -r _ u n s _ _ irq sirq st _ < /proc/stat
  nodet=0
  for f in /proc/[0-9]*/stat; do
    read -r line < "$f" 2>/dev/null || continue
    comm=${line#*(}; comm=${comm%%)*}
    [[ $comm == node* ]] || continue
    set -- ${line##*) }
    nodet=$((nodet + ${12} + ${13}))
  done
  echo "$(date +%H:%M:%S.%N | cut -c1-10) $((u + n + s + irq + sirq + st)) $nodet"
  sleep 0.5
done
