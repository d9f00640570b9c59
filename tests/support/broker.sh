#!/usr/bin/env bash
# broker.sh start DIR  -> starts tansu on a free loopback port, prints host:port, writes DIR/pid
# broker.sh stop DIR   -> stops it
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cmd=${1:?start|stop}
dir=${2:?state dir}
mkdir -p "$dir"
case "$cmd" in
  start)
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    "$root/.tools/bin/tansu" broker \
      --listener-url "tcp://127.0.0.1:$port" \
      --advertised-listener-url "tcp://127.0.0.1:$port" \
      --storage-engine memory://tansu/ >"$dir/broker.log" 2>&1 &
    echo $! >"$dir/pid"
    for _ in $(seq 1 150); do
      if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1',$port),0.2)" 2>/dev/null; then
        echo "127.0.0.1:$port"
        exit 0
      fi
      sleep 0.2
    done
    echo "broker did not start; log:" >&2
    cat "$dir/broker.log" >&2
    exit 1
    ;;
  stop)
    if [ -f "$dir/pid" ]; then
      kill "$(cat "$dir/pid")" 2>/dev/null || true
      rm -f "$dir/pid"
    fi
    ;;
esac
