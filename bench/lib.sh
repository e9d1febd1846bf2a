# Shell helpers shared by bench/run.sh and bench/backends.sh (sourced; not run alone).
# They read the caller's OUT, SERVER_CPU, CLIENT_CPU and QUIET_PCT, and call its log.

isnum() { [[ $1 =~ ^[0-9]+([.][0-9]+)?$ ]]; }

fail_phase() { log "$1: FAILED ($2)"; echo "$1" >> "$OUT/failed.txt"; }

foreign_of() { # $1: phase json -> integer foreign % on the pinned cores (0 if unknown)
  local f
  f=$(sed -n 's/.*"foreign_pct":\([0-9.]*\).*/\1/p' "$1")
  echo "${f%.*}" | sed 's/^$/0/'
}

# Load on the two pinned CPUs. Wait up to $1 s for both to be under QUIET_PCT%; sets
# PRE_BUSY0 and PRE_BUSY1 to the last reading.
read_busy() { awk -v c="cpu$1" '$1==c {b=$2+$3+$4+$7+$8+$9; t=b+$5+$6; print b, t}' /proc/stat; }
wait_quiet() {
  local i b0a t0a b1a t1a b0b t0b b1b t1b
  for i in $(seq 1 $(( $1 > 0 ? $1 : 1 ))); do
    read -r b0a t0a < <(read_busy "$SERVER_CPU"); read -r b1a t1a < <(read_busy "$CLIENT_CPU")
    sleep 1
    read -r b0b t0b < <(read_busy "$SERVER_CPU"); read -r b1b t1b < <(read_busy "$CLIENT_CPU")
    PRE_BUSY0=$(( t0b > t0a ? 100 * (b0b - b0a) / (t0b - t0a) : 0 ))
    PRE_BUSY1=$(( t1b > t1a ? 100 * (b1b - b1a) / (t1b - t1a) : 0 ))
    [ "$PRE_BUSY0" -lt "$QUIET_PCT" ] && [ "$PRE_BUSY1" -lt "$QUIET_PCT" ] && return 0
    [ "$i" = 1 ] && log "pinned CPUs busy (${PRE_BUSY0}%, ${PRE_BUSY1}%); waiting up to ${1}s for quiet"
  done
  return 0
}
