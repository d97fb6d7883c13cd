#!/usr/bin/env bash
# The programs the tests drive besides Python packages, installed when missing:
#   - prometheus (Debian's package): tests/test_prometheus_e2e.py scrapes the collector with it;
#   - Node.js 20+ with npm: tests/test_typescript_example.py builds and runs examples/typescript
#     (checked, not installed: Debian 12's nodejs is 18; install Node 20 from nodejs.org or your
#     distribution's newer packages).
# Used by the README's test command and by .ci/run. Needs root or sudo only to install.
set -euo pipefail

if ! command -v prometheus >/dev/null; then
  sudo_prefix=""
  [ "$(id -u)" -eq 0 ] || sudo_prefix="sudo"
  echo "installing Debian's prometheus package (for tests/test_prometheus_e2e.py)" >&2
  $sudo_prefix apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_prefix apt-get install -y -qq --no-install-recommends prometheus
fi
prometheus --version 2>&1 | head -1

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "install_test_tools.sh: Node.js 20+ with npm is needed (tests/test_typescript_example.py)" >&2
  exit 1
fi
node_major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$node_major" -lt 20 ]; then
  echo "install_test_tools.sh: Node.js $(node --version) is too old: 20 or later is needed" >&2
  exit 1
fi
echo "node $(node --version), npm $(npm --version)"
