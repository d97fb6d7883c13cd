#!/usr/bin/env bash
# Builds the container image and checks what the Dockerfile promises, for real:
#   - the image: size, HEALTHCHECK kept, USER 10001:10001, STOPSIGNAL SIGTERM, no pip/compiler;
#   - the running container: PID 1 is tgi-collector (no shell) as uid/gid 10001;
#   - the HEALTHCHECK command answers (exit 0 = SERVING), `podman healthcheck run` says healthy;
#   - a Collect from the host (loopback-published port) scrapes a simulator running in the
#     container and gets HEALTH_UP; an open Watch stream ends with OK on shutdown;
#   - `podman stop` sends SIGTERM: the container exits 0, well before the stop timeout, after
#     logging "shutting down".
#
# usage: scripts/check_container.sh [--podman | --venv] [--no-build]
#   --podman    build with `podman build --isolation chroot` and run the image (the default when
#               podman can run containers here)
#   --venv      no container runtime: replay the Dockerfile's steps into a fresh temporary venv
#               (same context files, same pip command), run `serve` as uid 10001 (setpriv) on
#               loopback, and check the HEALTHCHECK command, a Collect and SIGTERM the same way
#   --no-build  (podman) use the existing $IMAGE
# Environment:
#   BASE_IMAGE  build arg (default localhost/tgi-collector-base:bookworm, made by
#               scripts/build_base_image.sh when missing; python:3.11-slim needs a registry)
#   IMAGE       tag to build and run (default localhost/tgi-collector:check)
#   CA_BUNDLE   CA bundle handed to pip as the build secret ca_bundle (default: the system
#               bundle /etc/ssl/certs/ca-certificates.crt when present; empty: none)
#   PODMAN_RUN_FLAGS  extra `podman run` flags; default: probed (see run_flag_candidates)
#   GRPCURL     grpcurl binary (default: grpcurl on PATH, else .venv/bin/grpcurl)
#   PYTHON      python3 >= 3.11 for --venv, runnable by uid 10001 (default /usr/bin/python3,
#               the system's, like the image's; else python3 on PATH)
# Loopback only, bounded waits, everything it starts is removed on exit. Exit 0 = all passed.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=auto
build=1
for arg in "$@"; do
  case "$arg" in
    --podman) mode=podman ;;
    --venv) mode=venv ;;
    --no-build) build=0 ;;
    -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
    *) echo "usage: $0 [--podman | --venv] [--no-build]" >&2; exit 2 ;;
  esac
done

BASE_IMAGE=${BASE_IMAGE:-localhost/tgi-collector-base:bookworm}
IMAGE=${IMAGE:-localhost/tgi-collector:check}
CA_BUNDLE=${CA_BUNDLE-/etc/ssl/certs/ca-certificates.crt}
if [[ -z ${PYTHON:-} ]]; then
  PYTHON=python3
  [[ -x /usr/bin/python3 ]] && PYTHON=/usr/bin/python3
fi
GRACE=5          # the Dockerfile's TGI_COLLECTOR_GRACE_SECONDS
STOP_TIMEOUT=10  # podman stop -t: SIGKILL after this; a clean stop is well under it

failures=0
pass() { printf 'PASS  %s\n' "$*"; }
fail() { printf 'FAIL  %s\n' "$*"; failures=$((failures + 1)); }
info() { printf '....  %s\n' "$*"; }
die() { printf 'ERROR %s\n' "$*" >&2; exit 1; }
check() {  # check DESCRIPTION COMMAND...: PASS when the command succeeds
  local what=$1; shift
  if "$@"; then pass "$what"; else fail "$what"; fi
}
free_port() {
  "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
now() { date +%s.%N; }
elapsed() { "$PYTHON" -c "import sys; print('%.2f' % (float(sys.argv[2]) - float(sys.argv[1])))" "$1" "$2"; }

grpcurl_bin=${GRPCURL:-$(command -v grpcurl || true)}
[[ -z $grpcurl_bin && -x .venv/bin/grpcurl ]] && grpcurl_bin=.venv/bin/grpcurl

# The HEALTHCHECK's argv, read from the Dockerfile so the check cannot drift from it.
healthcheck_argv() {
  "$PYTHON" - <<'EOF'
import json, re
text = open("Dockerfile").read().replace("\\\n", " ")
print(" ".join(json.loads(re.search(r"^HEALTHCHECK .*?CMD (\[.*\])", text, re.M).group(1))))
EOF
}

tmp=$(mktemp -d /tmp/tgi-collector-check.XXXXXX)
chmod 755 "$tmp"
container=""
bg_pids=()
cleanup() {
  local pid
  for pid in "${bg_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [[ -n $container ]]; then podman rm --force --time 0 "$container" >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

# Collect through grpcurl from the host, or, without grpcurl, through the project's client
# (the image's own python in a second container on the host network, or the venv's python).
collect_up() {  # collect_up ADDRESS ENDPOINT CLIENT_PYTHON...: succeeds on HEALTH_UP
  local address=$1 endpoint=$2; shift 2
  local request="{\"target\":{\"instance_id\":\"sim\",\"endpoint\":\"$endpoint\"},\"options\":{\"omit_raw_metrics\":true}}"
  if [[ -n $grpcurl_bin ]]; then
    timeout 15 "$grpcurl_bin" -plaintext -max-time 10 -d "$request" "$address" \
      tgi_collector.v1.CollectorService/Collect >"$tmp/collect.json" 2>&1 || return 1
  else
    timeout 30 "$@" -c '
import asyncio, sys
from google.protobuf.json_format import MessageToJson
from tgi_collector.client import CollectorClient
async def main():
    async with CollectorClient(sys.argv[1]) as client:
        snapshot = await client.collect(sys.argv[2], instance_id="sim", timeout=10)
    print(MessageToJson(snapshot, preserving_proto_field_name=True))
asyncio.run(main())' "$address" "$endpoint" >"$tmp/collect.json" 2>&1 || return 1
  fi
  grep -q '"HEALTH_UP"' "$tmp/collect.json"
}
collect_until_up() {  # bounded: the simulator needs a moment to start
  local deadline=$((SECONDS + 20))
  until collect_up "$@"; do
    ((SECONDS < deadline)) || { sed -n '1,20p' "$tmp/collect.json"; return 1; }
    sleep 0.5
  done
  info "Collect answered: $(grep -o '"health": "[A-Z_]*"' "$tmp/collect.json" | head -1), $(grep -o '"samples": "[0-9]*"' "$tmp/collect.json" | head -1)"
}
start_watch() {  # start_watch ADDRESS ENDPOINT: a Watch stream held open across the shutdown
  [[ -n $grpcurl_bin ]] || { info "no grpcurl: the Watch-ends-with-OK check is skipped"; return 0; }
  "$grpcurl_bin" -plaintext -max-time 60 \
    -d "{\"targets\":[{\"instance_id\":\"sim\",\"endpoint\":\"$2\"}],\"interval\":\"1s\"}" \
    "$1" tgi_collector.v1.CollectorService/Watch >"$tmp/watch.out" 2>&1 &
  watch_pid=$!
  bg_pids+=("$watch_pid")
  sleep 2.5
}
check_watch_ended() {
  [[ -n $grpcurl_bin ]] || return 0
  local rc=0
  timeout 10 tail --pid="$watch_pid" -f /dev/null || true
  wait "$watch_pid" || rc=$?
  local messages
  messages=$(grep -c '"instance_id"' "$tmp/watch.out" || true)
  if [[ $rc -eq 0 && $messages -ge 1 ]]; then
    pass "an open Watch stream ($messages snapshots) ended with OK at shutdown (grpcurl exit 0)"
  else
    fail "Watch stream at shutdown: grpcurl exit $rc, $messages snapshots"; tail -5 "$tmp/watch.out"
  fi
}

# --- podman ---------------------------------------------------------------------------------

# podman's defaults can need help in a sandbox: without CAP_SYS_RESOURCE the default rlimits
# (nofile 1048576) cannot be set, and crun refuses hybrid cgroup v1/v2 hierarchies (runc works).
run_flag_candidates() {
  local nofile
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited ]] && nofile=1048576
  local ulimits="--ulimit nofile=$nofile:$nofile --ulimit nproc=4096:4096"
  printf '%s\n' "" "$ulimits" "--runtime runc $ulimits" "--runtime crun --cgroups=disabled $ulimits"
}
probe_run_flags() {
  local flags
  if [[ -n ${PODMAN_RUN_FLAGS+x} ]]; then run_flags=$PODMAN_RUN_FLAGS; return 0; fi
  while IFS= read -r flags; do
    # shellcheck disable=SC2086  # word splitting of the flags is intended
    if timeout 60 podman run --rm --no-healthcheck $flags --entrypoint tgi-collector "$IMAGE" --version \
        >"$tmp/probe.out" 2>&1; then
      run_flags=$flags
      return 0
    fi
    info "podman run ${flags:-(no extra flags)}: $(grep -v systemd "$tmp/probe.out" | grep -m1 -i error || tail -1 "$tmp/probe.out")"
  done < <(run_flag_candidates)
  return 1
}
can_run_podman() {
  command -v podman >/dev/null && timeout 30 podman info >/dev/null 2>&1
}

podman_check() {
  local secret=()
  if [[ $build -eq 1 ]]; then
    if [[ $BASE_IMAGE == localhost/* ]] && ! podman image exists "$BASE_IMAGE"; then
      info "base image $BASE_IMAGE missing: scripts/build_base_image.sh"
      BASE_TAG=$BASE_IMAGE scripts/build_base_image.sh
    fi
    [[ -n $CA_BUNDLE && -s $CA_BUNDLE ]] && secret=(--secret "id=ca_bundle,src=$CA_BUNDLE")
    info "podman build --isolation chroot --format docker --build-arg BASE_IMAGE=$BASE_IMAGE ${secret[*]} -t $IMAGE ."
    local start
    start=$(now)
    if ! timeout 900 podman build --isolation chroot --format docker --build-arg "BASE_IMAGE=$BASE_IMAGE" \
        "${secret[@]}" -t "$IMAGE" . >"$tmp/build.log" 2>&1; then
      tail -30 "$tmp/build.log"; die "podman build failed"
    fi
    pass "podman build ($(elapsed "$start" "$(now)") s)"
  fi

  local size
  size=$(podman image inspect --format '{{.Size}}' "$IMAGE")
  info "image $IMAGE: $size bytes ($((size / 1000000)) MB); base $BASE_IMAGE: $(podman image inspect --format '{{.Size}}' "$BASE_IMAGE" 2>/dev/null || echo '?') bytes"
  check "HEALTHCHECK kept in the image: $(podman image inspect --format '{{json .HealthCheck.Test}}' "$IMAGE")" \
    test "$(podman image inspect --format '{{json .HealthCheck.Test}}' "$IMAGE")" != null
  check "USER $(podman image inspect --format '{{.User}}' "$IMAGE"), STOPSIGNAL $(podman image inspect --format '{{.Config.StopSignal}}' "$IMAGE")" \
    test "$(podman image inspect --format '{{.User}} {{.Config.StopSignal}}' "$IMAGE")" = "10001:10001 SIGTERM"

  probe_run_flags || die "podman cannot run containers here (see the lines above); try --venv"
  info "podman run flags: ${run_flags:-(none needed)}"

  # shellcheck disable=SC2086
  check "no pip, no compiler, no tests in the image" podman run --rm --no-healthcheck $run_flags --entrypoint /bin/sh "$IMAGE" -c \
    '! test -e /opt/tgi-collector/bin/pip && ! command -v gcc && ! command -v cc && ! test -e /src'

  local port metrics_port sim_port=8080
  port=$(free_port)
  metrics_port=$(free_port)
  container=tgi-collector-check-$$
  # The image's defaults (gRPC on 0.0.0.0:50051, metrics on 0.0.0.0:9464 in the container),
  # published on host loopback only.
  # shellcheck disable=SC2086
  podman run -d --name "$container" $run_flags -p "127.0.0.1:$port:50051" \
    -p "127.0.0.1:$metrics_port:9464" "$IMAGE" \
    >"$tmp/run.out" 2>&1 || { cat "$tmp/run.out"; die "podman run failed"; }
  grep -q 'systemd' "$tmp/run.out" \
    && info "no systemd here: podman cannot schedule the HEALTHCHECK timer; running it by hand"

  local deadline=$((SECONDS + 30)) status=""
  until status=$(podman healthcheck run "$container" 2>&1); do
    ((SECONDS < deadline)) || break
    sleep 0.5
  done
  check "podman healthcheck run: ${status:-healthy} (exit 0)" test -z "$status" -o "$status" = healthy
  info "container health: $(podman inspect --format '{{.State.Health.Status}}' "$container")"

  local hc out rc=0
  hc=$(healthcheck_argv)
  # shellcheck disable=SC2086
  out=$(podman exec "$container" $hc 2>&1) || rc=$?
  check "HEALTHCHECK command in the container: '$hc' -> exit $rc ${out}" test "$rc" -eq 0

  local pid
  pid=$(podman inspect --format '{{.State.Pid}}' "$container")
  check "serve runs as uid/gid 10001: $(grep -E '^(Uid|Gid):' "/proc/$pid/status" | tr -s '\t' ' ' | paste -sd ';')" \
    grep -qE '^Uid:\s+10001\s+10001\s+10001\s+10001$' "/proc/$pid/status"
  out=$(podman exec "$container" cat /proc/1/cmdline | tr '\0' ' ')
  check "PID 1 in the container is tgi-collector itself: $out" grep -q 'tgi-collector serve' <<<"$out"

  podman exec -d "$container" tgi-collector simulate --port "$sim_port" >/dev/null
  local client=()
  read -r -a client <<<"podman run --rm --no-healthcheck --network host $run_flags --entrypoint python3"
  client+=("$IMAGE")
  check "Collect from the host via 127.0.0.1:$port (${grpcurl_bin:-client in a host-network container}) -> HEALTH_UP" \
    collect_until_up "127.0.0.1:$port" "http://127.0.0.1:$sim_port/metrics" "${client[@]}"

  check "self-metrics on 127.0.0.1:$metrics_port (9464 in the container) count that Collect" \
    metrics_show_ok_scrape "$metrics_port"

  start_watch "127.0.0.1:$port" "http://127.0.0.1:$sim_port/metrics"
  local start stop_time code
  start=$(now)
  timeout $((STOP_TIMEOUT + 20)) podman stop --time "$STOP_TIMEOUT" "$container" >/dev/null 2>&1 || true
  stop_time=$(elapsed "$start" "$(now)")
  code=$(podman inspect --format '{{.State.ExitCode}}' "$container")
  check "podman stop -t $STOP_TIMEOUT (SIGTERM): exit code $code after $stop_time s" \
    "$PYTHON" -c "import sys; sys.exit(not ($code == 0 and $stop_time < $GRACE + 3))"
  check_watch_ended
  podman logs "$container" >"$tmp/logs.txt" 2>&1 || true
  check "shutdown logged: $(grep -m1 'shutting down' "$tmp/logs.txt" || echo none)" grep -q 'shutting down' "$tmp/logs.txt"
  info "container log:"; sed 's/^/      /' "$tmp/logs.txt"
}

metrics_show_ok_scrape() {  # metrics_show_ok_scrape PORT: /metrics has an ok scrape of a target
  "$PYTHON" - "$1" <<'PY'
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
ok = [line for line in body.splitlines()
      if line.startswith("tgi_collector_scrapes_total{") and 'outcome="ok"' in line]
print(ok[0] if ok else "no ok scrape in /metrics")
sys.exit(not ok or float(ok[0].rsplit(" ", 1)[1]) < 1)
PY
}

# --- venv: the Dockerfile's steps, replayed without a container runtime ------------------------

venv_check() {
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || die "$PYTHON is older than 3.11"
  local src=$tmp/src venv=$tmp/opt/tgi-collector
  # The build context: what .dockerignore lets through (pyproject.toml, README.md, the package).
  mkdir -p "$src"
  tar -c --exclude=__pycache__ --exclude='*.py[cod]' pyproject.toml README.md tgi_collector | tar -x -C "$src"
  info "context: $(find "$src" -type f | wc -l) files"

  # RUN python3 -m venv /opt/tgi-collector; RUN pip install ... (no host pip config, like the build)
  "$PYTHON" -m venv "$venv"
  local pip_env=(env -u PIP_FIND_LINKS -u PIP_INDEX_URL -u PIP_EXTRA_INDEX_URL -u PIP_CERT
                 PIP_CONFIG_FILE=/dev/null PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1)
  [[ -n $CA_BUNDLE && -s $CA_BUNDLE ]] && pip_env+=(PIP_CERT="$CA_BUNDLE")
  local start
  start=$(now)
  if ! (cd "$src" && timeout 900 "${pip_env[@]}" "$venv/bin/pip" install --no-cache-dir --only-binary=:all: . \
        && "${pip_env[@]}" "$venv/bin/pip" uninstall --yes pip setuptools \
        && "$venv/bin/tgi-collector" --version) >"$tmp/build.log" 2>&1; then
    tail -30 "$tmp/build.log"; die "the Dockerfile's install step failed in the venv"
  fi
  pass "Dockerfile build steps replayed in a fresh venv ($(elapsed "$start" "$(now)") s): $(tail -1 "$tmp/build.log")"
  info "venv size: $(du -sh "$venv" | cut -f1)"
  chmod -R a+rX "$tmp"

  # USER 10001:10001: setpriv when root, else the current user (reported).
  local as_user=()
  if [[ $(id -u) -eq 0 ]] && command -v setpriv >/dev/null; then
    as_user=(setpriv --reuid 10001 --regid 10001 --clear-groups --)
    "${as_user[@]}" "$venv/bin/python3" -c '' 2>/dev/null \
      || die "uid 10001 cannot run $(readlink -f "$venv/bin/python3") (a python under /root?): set PYTHON"
  else
    info "not root (or no setpriv): serve runs as $(id -un), not uid 10001"
  fi
  local run_env=(env -i "PATH=$venv/bin:/usr/bin:/bin" PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/nonexistent)
  local port metrics_port sim_port
  port=$(free_port)
  metrics_port=$(free_port)
  sim_port=$(free_port)
  # The image's defaults (listen 0.0.0.0:50051, metrics 0.0.0.0:9464, grace 5), on loopback
  # (no network namespace here).
  "${as_user[@]}" "${run_env[@]}" tgi-collector serve --listen "127.0.0.1:$port" \
    --metrics-listen "127.0.0.1:$metrics_port" --grace "$GRACE" >"$tmp/logs.txt" 2>&1 &
  local pid=$!
  bg_pids+=("$pid")

  local hc out rc=1 deadline=$((SECONDS + 30))
  hc=$(healthcheck_argv)
  hc=${hc/127.0.0.1:50051/127.0.0.1:$port}
  while ((SECONDS < deadline)); do
    rc=0
    # shellcheck disable=SC2086
    out=$("${as_user[@]}" "${run_env[@]}" $hc 2>&1) || rc=$?
    [[ $rc -eq 0 ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  check "HEALTHCHECK command: '$hc' -> exit $rc $out" test "$rc" -eq 0
  kill -0 "$pid" 2>/dev/null || { cat "$tmp/logs.txt"; die "serve exited early"; }
  check "serve runs as uid/gid 10001: $(grep -E '^(Uid|Gid):' "/proc/$pid/status" | tr -s '\t' ' ' | paste -sd ';')" \
    grep -qE '^Uid:\s+10001\s+10001\s+10001\s+10001$' "/proc/$pid/status"

  "${as_user[@]}" "${run_env[@]}" tgi-collector simulate --port "$sim_port" >"$tmp/sim.log" 2>&1 &
  bg_pids+=("$!")
  check "Collect via 127.0.0.1:$port (${grpcurl_bin:-the venv client}) -> HEALTH_UP" \
    collect_until_up "127.0.0.1:$port" "http://127.0.0.1:$sim_port/metrics" "$venv/bin/python3"
  check "self-metrics on 127.0.0.1:$metrics_port count that Collect" \
    metrics_show_ok_scrape "$metrics_port"

  start_watch "127.0.0.1:$port" "http://127.0.0.1:$sim_port/metrics"
  local start stop_time code=0
  start=$(now)
  kill -TERM "$pid"
  deadline=$((SECONDS + STOP_TIMEOUT))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.05; done
  kill -0 "$pid" 2>/dev/null && { info "no exit after $STOP_TIMEOUT s: SIGKILL"; kill -KILL "$pid"; }
  wait "$pid" || code=$?
  stop_time=$(elapsed "$start" "$(now)")
  check "SIGTERM: exit code $code after $stop_time s" \
    "$PYTHON" -c "import sys; sys.exit(not ($code == 0 and $stop_time < $GRACE + 3))"
  check_watch_ended
  check "shutdown logged: $(grep -m1 'shutting down' "$tmp/logs.txt" || echo none)" grep -q 'shutting down' "$tmp/logs.txt"
  info "server log:"; sed 's/^/      /' "$tmp/logs.txt"
}

if [[ $mode == auto ]]; then
  if can_run_podman; then mode=podman; else mode=venv; info "podman unusable here: --venv"; fi
fi
info "mode: $mode"
if [[ $mode == podman ]]; then podman_check; else venv_check; fi

if [[ $failures -eq 0 ]]; then
  echo "ALL CHECKS PASSED ($mode)"
else
  echo "$failures CHECK(S) FAILED ($mode)"
  exit 1
fi
