#!/usr/bin/env bash
# make check-pythons: for each Python given (default: the 3.10-3.13 found under pyenv, else on PATH), a clean venv
# with the wheel built from this tree and the extras a user installs, then, from outside the repository:
# pip check, `python -m attnseg --help`, `attnseg predict` on an example image, `attnseg models --card`, and the
# HTTP API with the Hugging Face client. One line per step; a summary table at the end; exit 1 if any failed.
# TESTS=1 also installs the dev extra and runs the suite's fast subset (make check's) against the installed wheel.
#   scripts/check_pythons.sh [PYTHON ...]        EXTRAS=serve,openvino,video,lseg  TESTS=1  KEEP=1 (keep the venvs)
set -uo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
EXTRAS="${EXTRAS:-serve,openvino,video,lseg}"
WORK="${WORK:-$(mktemp -d /tmp/attnseg-pythons.XXXXXX)}"
EXAMPLE="$ROOT/examples/camvid_test_0001TP_008550.png"

pythons=("$@")
if [ ${#pythons[@]} -eq 0 ]; then
  for v in 3.10 3.11 3.12 3.13; do
    p=$(ls -d "$HOME"/.pyenv/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V | tail -1)
    [ -n "$p" ] || p=$(command -v "python$v" || true)
    [ -n "$p" ] && pythons+=("$p")
  done
fi
[ ${#pythons[@]} -gt 0 ] || { echo "no Python 3.10-3.13 found"; exit 2; }

echo "building the wheel into $WORK/dist"
"${pythons[0]}" -m venv "$WORK/build" && "$WORK/build/bin/pip" -q install build \
  && "$WORK/build/bin/python" -m build -q --wheel --sdist --outdir "$WORK/dist" "$ROOT" >/dev/null \
  || { echo "FAILED: building the wheel"; exit 1; }
WHEEL=$(ls "$WORK"/dist/attnseg-*.whl)

declare -A result
status=0
for py in "${pythons[@]}"; do
  v=$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  env="$WORK/py$v" run="$WORK/run$v"
  step() {  # step NAME COMMAND...: run it, say ok or the last line of what it printed
    local name=$1; shift
    if out=$("$@" 2>&1); then echo "  ok    $name"; else
      echo "  FAIL  $name: $(echo "$out" | grep -v '^WARNING: Location' | tail -3 | tr '\n' ' ')"; return 1; fi
  }
  echo "Python $v ($py)"
  ok=1
  step "venv" "$py" -m venv "$env" || ok=0
  # torch first: the CPU build where one is on this machine (pip's find-links), else PyPI's
  [ $ok = 1 ] && { step "torch" "$env/bin/pip" install -q torch==2.13.0 || ok=0; }
  [ $ok = 1 ] && { step "wheel[$EXTRAS]" "$env/bin/pip" install -q "$WHEEL[$EXTRAS]" || ok=0; }
  [ $ok = 1 ] && { step "pip check" "$env/bin/pip" check || ok=0; }
  mkdir -p "$run"
  if [ $ok = 1 ]; then
    (cd "$run" && step "python -m attnseg --help" "$env/bin/python" -m attnseg --help) || ok=0
    (cd "$run" && step "attnseg predict (default model)" "$env/bin/attnseg" predict "$EXAMPLE" --out out) || ok=0
    (cd "$run" && step "outputs written" test -s out/camvid_test_0001TP_008550.png) || ok=0
    (cd "$run" && step "attnseg models --card" "$env/bin/attnseg" models --card sanet-effnet-lite0-camvid) || ok=0
    (cd "$run" && step "train --config by shipped name" "$env/bin/python" -c \
      "from attnseg.engine.config import load_config; assert load_config('sanet-effnet-lite0_camvid').model.name") || ok=0
    (cd "$run" && step "serve + Hugging Face client" "$env/bin/python" "$ROOT/scripts/check_serve_client.py" \
      "$env/bin/attnseg" "$EXAMPLE") || ok=0
  fi
  if [ $ok = 1 ] && [ "${TESTS:-0}" = 1 ]; then
    step "wheel[dev]" "$env/bin/pip" install -q "$WHEEL[dev]" || ok=0
    # from the checkout (tests read its docs, configs and examples); `attnseg` is the installed wheel, not src/
    if [ $ok = 1 ]; then
      (cd "$ROOT" && "$env/bin/python" -m pytest -q -p no:cacheprovider -o addopts="" \
        -m "not slow and not data and not e2e" > "$WORK/tests$v.log" 2>&1)
      rc=$?
      echo "  $([ $rc = 0 ] && echo 'ok   ' || echo 'FAIL ') fast subset (make check's): $(tail -1 "$WORK/tests$v.log")"
      [ $rc = 0 ] || ok=0
    fi
  fi
  result[$v]=$([ $ok = 1 ] && echo ok || echo FAILED)
  [ $ok = 1 ] || status=1
  [ "${KEEP:-0}" = 1 ] || rm -rf "$env"
done
echo
echo "| Python | wheel[$EXTRAS] installs, pip check, predict, serve |"
echo "| --- | --- |"
for v in "${!result[@]}"; do echo "| $v | ${result[$v]} |"; done | sort
exit $status
