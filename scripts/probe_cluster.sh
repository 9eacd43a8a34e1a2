# Sourced by the probes: starts three release replicas on loopback and finds the leader.
#
#   . scripts/probe_cluster.sh
#   probe_cluster NAME CLIENT_BASE PEER_BASE DIR LOG BINARY [SERVER_FLAG...]
#
# Stops any earlier run of cluster NAME, then starts replica i (1-3) with clients on port
# CLIENT_BASE+i, peers on PEER_BASE+i, a fresh data dir under DIRi and its output in LOGi.
# Sets LEADER to the id of the replica that reports role:leader (empty after 20 s without one).
probe_cluster() {
  local name=$1 client=$2 peer=$3 dir=$4 log=$5 bin=$6; shift 6
  local i t peers="1=127.0.0.1:$((peer+1)),2=127.0.0.1:$((peer+2)),3=127.0.0.1:$((peer+3))"
  pkill -f "cluster-name $name"; sleep 0.5
  for i in 1 2 3; do rm -rf "$dir$i"; mkdir -p "$dir$i"
    nohup "$bin" --id $i --client-addr 127.0.0.1:$((client+i)) --peer-addr 127.0.0.1:$((peer+i)) \
      --peers $peers --data-dir "$dir$i/data" --cluster-name "$name" "$@" > "$log$i" 2>&1 &
  done
  LEADER=""
  for t in $(seq 1 100); do
    for i in 1 2 3; do
      if redis-cli -p $((client+i)) info 2>/dev/null | grep -q "role:leader"; then LEADER=$i; fi
    done
    [ -n "$LEADER" ] && break; sleep 0.2
  done
}

# Each thread of process PID, sorted by id: id, name (spaces as _), user+system ticks (read from
# the fields after the name, which may itself hold spaces).
#
#   thread_ticks PID
thread_ticks() {
  local t
  for t in /proc/$1/task/*; do
    echo "${t##*/} $(tr ' ' _ < "$t/comm") $(sed 's/.*) //' "$t/stat" | awk '{print $12+$13}')"
  done | sort
}

# Each thread of each PID, sorted by id: id, PID:name (spaces as _), then from its schedstat the ns
# it ran, the ns it waited runnable for a CPU, and the times it was put on a CPU.
#
#   thread_waits PID...
thread_waits() {
  local p t
  for p in "$@"; do
    for t in /proc/$p/task/*; do
      echo "${t##*/} $p:$(tr ' ' _ < "$t/comm") $(cat "$t/schedstat" 2>/dev/null)"
    done
  done | sort
}

# The machine's CPU time by kind (user, nice, system, idle, iowait, irq, softirq, steal ticks).
cpu_split() {
  head -1 /proc/stat | cut -d' ' -f3-10
}
