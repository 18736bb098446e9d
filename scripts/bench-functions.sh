# SPDX-License-Identifier: BSD-3-Clause
# What scripts/bench and scripts/bench-remote measure and report with.
# Each measurement is a file $work/m.KEY with one value per run.

ms () { echo $(( $(date +%s%N) / 1000000 )); }
# stats KEY: "median min max" of a measurement.
stats () { sort -n "$work/m.$1" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)], a[1], a[NR]}'; }
median () { stats "$1" | cut -d' ' -f1; }
secs () { awk -v v="$1" 'BEGIN {printf "%.3f", v / 1000}'; }
# fmt_time KEY: "MEDIAN s (MIN–MAX)" of a measurement in ms.
fmt_time () { read -r m lo hi < <(stats "$1"); echo "$(secs "$m") s ($(secs "$lo")–$(secs "$hi"))"; }
ratio () { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
