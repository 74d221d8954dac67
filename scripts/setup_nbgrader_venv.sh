#!/usr/bin/env bash
# Create .venv-nbgrader: a real nbgrader 0.9.6 in its own virtual environment (nbgrader pins its own
# Jupyter stack, so it never goes into the course's .venv), plus a kernelspec named "python3" that runs
# the course's .venv python, so `nbgrader autograde` executes notebooks with the course model available.
# Idempotent: does nothing when the venv is already complete. Usage: scripts/setup_nbgrader_venv.sh [VENV]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-nbgrader}"
COURSE_PY="$(pwd)/.venv/bin/python"
STAMP="$VENV/.rsl-nbgrader-0.9.6"
PYTHON="${PYTHON:-python3}"

if [ ! -f "$STAMP" ]; then
    test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "nbgrader==0.9.6"
fi

# The kernel nbgrader runs: the course environment's python (torch, transformer-lens, course_utils).
KERNEL_DIR="$VENV/share/jupyter/kernels/python3"
mkdir -p "$KERNEL_DIR"
cat > "$KERNEL_DIR/kernel.json" <<JSON
{
 "argv": ["$COURSE_PY", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
 "display_name": "Python 3 (Residual Stream Lab)",
 "language": "python",
 "metadata": {"debugger": false}
}
JSON
"$VENV/bin/nbgrader" --version >/dev/null
printf "*\n" > "$VENV/.gitignore"  # keep the venv out of git status
touch "$STAMP"
echo "nbgrader ready: $VENV/bin/nbgrader (kernel python3 -> $COURSE_PY)"
