#!/usr/bin/env bash
# Entitle on a fresh Debian machine with Python 3.11+: set up, then run.
#   ./run.sh demo    set everything up and run the live demo
#   ./run.sh test    set everything up and run lint, type checks and the whole test suite
# It creates .venv with the project and its dev tools, and installs mosquitto
# with apt-get when it is missing and we are root (otherwise it says how).
set -euo pipefail
cd "$(dirname "$0")"

say() { printf '\033[1m==>\033[0m %s\n' "$*" >&2; }
die() { printf '\033[31merror:\033[0m %s\n' "$*" >&2; exit 2; }

apt_updated=""
apt_install() {
  if [ "$(id -u)" != 0 ]; then
    say "missing: $* — install it with: sudo apt-get install -y $*"
    return 1
  fi
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

find_python() {
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"; return 0
    fi
  done
  return 1
}

setup() {
  local python
  python=$(find_python) || die "Python 3.11+ not found: install it with 'apt-get install python3'"
  if [ ! -x .venv/bin/python ]; then
    say "creating .venv with $python"
    if ! "$python" -m venv .venv 2>/dev/null; then
      rm -rf .venv
      apt_install python3-venv || die "cannot create a virtual environment: install python3-venv"
      "$python" -m venv .venv
    fi
  fi
  local stamp=".venv/.entitle-$(sha256sum pyproject.toml | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    say "installing Python packages into .venv (first run takes a minute)"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
    rm -f .venv/.entitle-*; touch "$stamp"
  fi
  if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    apt_install mosquitto ||
      say "without mosquitto the demo uses the embedded amqtt broker and broker tests are skipped"
  fi
  # the dashboard's front-end libraries, pinned by package-lock.json (no CDN at run time);
  # --ignore-scripts: no package runs code at install time
  if ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm || say "without npm the dashboard renders without style and script"
  fi
  local npm_stamp="node_modules/.entitle-$(sha256sum package-lock.json | cut -c1-16)"
  if command -v npm >/dev/null 2>&1 && [ ! -f "$npm_stamp" ]; then
    say "installing the dashboard's front-end packages (npm ci)"
    npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >/dev/null
    touch "$npm_stamp"
  fi
  export PATH="$PWD/.venv/bin:$PATH:/usr/sbin"
}

case "${1:-}" in
  demo)
    shift; setup
    exec entitle demo "$@"
    ;;
  test)
    shift; setup
    if ! command -v chromium >/dev/null 2>&1; then
      apt_install chromium || say "without chromium the browser tests are skipped"
    fi
    say "ruff (lint and format)"
    ruff check . && ruff format --check --quiet .
    say "mypy --strict protocol common agent broker"
    mypy protocol common agent broker
    # the house's shape: layers, no import cycles, pure rules ([tool.importlinter] in pyproject.toml)
    say "import contracts (lint-imports)"
    lint-imports
    # one worker per core (pytest-xdist); each worker has its own brokers, ports,
    # temp dirs and PostgreSQL databases; an idle worker takes over tests queued for
    # the other (worksteal: the schema tests alone are ~30% of the time).
    # './run.sh test -n 0' runs in one process.
    say "pytest (a worker per core)"
    set +e
    # --durations: the slowest tests, printed at the end (the suite's 20-minute budget)
    python -m pytest -n auto --dist worksteal --durations=30 "$@"
    rc=$?
    set -e
    if [ "$rc" = 5 ]; then die "pytest collected no tests: that is a failure, not a pass"; fi
    exit "$rc"
    ;;
  *)
    sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
