#!/usr/bin/env bash
# The same benchmark rerun on the idle machine (no other jobs; see uptime lines in run.log).
set -euo pipefail
(uptime; bash "$(dirname "$0")/../run_cpu.sh" results/bench/quiet; uptime) > results/bench/quiet/run.log 2>&1
