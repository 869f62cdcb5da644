#!/usr/bin/env bash
# The two commands a newcomer needs:
#   ./run.sh demo    install seqrl into .venv (first time only) and run the main job on its default
#   ./run.sh test    install seqrl with its test tools into .venv and run the test suite
# Anything else is passed to the seqrl command inside .venv:  ./run.sh data info FILE.hdf5
set -euo pipefail
cd "$(dirname "$0")"
VENV=${SEQRL_VENV:-.venv}
# torch is pinned so pip takes the CPU wheel on CPU-only machines; set SEQRL_TORCH to change it.
TORCH_SPEC=${SEQRL_TORCH:-torch==2.13.0}

ensure_venv() {  # $1: extras, e.g. "dev"
  local stamp="$VENV/.seqrl-installed-$1"
  if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
  fi
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
    "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install --quiet -e ".[$1]"
    touch "$stamp"
  fi
}

cmd=${1:-demo}
[ $# -gt 0 ] && shift
case "$cmd" in
  demo) ensure_venv dev; exec "$VENV/bin/seqrl" demo "$@" ;;
  test) ensure_venv dev; exec "$VENV/bin/python" -m pytest -q "$@" ;;
  *)    ensure_venv dev; exec "$VENV/bin/seqrl" "$cmd" "$@" ;;
esac
