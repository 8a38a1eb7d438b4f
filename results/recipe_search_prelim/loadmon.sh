#!/usr/bin/env bash
# every 10 s: time, loadavg, and the other engineer's python/pytest processes (not ours) count
while true; do
  n=$(ps -eo args | grep -E "pytest|maelab" | grep -v -E "grep|research/pt.py|research/probe.py" | wc -l)
  echo "$(date +%T) $(cut -d' ' -f1-3 /proc/loadavg) others=$n" >> /tmp/exp/research/results/load.log
  sleep 10
done
