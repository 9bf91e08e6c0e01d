#!/usr/bin/env bash
# The benchmark's separate environment (.venv-bench) for RecBole 1.2.1, the reference SASRec.
# Separate because RecBole needs numpy<2 and pandas<3 while the project runs on numpy 2
# (DESIGN §10); setuptools<81 keeps the pkg_resources that its dependencies still import.
# Usage: scripts/bench_env.sh   then   .venv/bin/python benchmarks/bench_train.py
set -euo pipefail
cd "$(dirname "$0")/.."
py="${PYTHON:-python3}"
[ -x .venv-bench/bin/python ] || "$py" -m venv .venv-bench
pip=(.venv-bench/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip wheel
"${pip[@]}" "torch==2.13.0" "numpy<2" "pandas<3" "setuptools>=77.0.3,<81"
"${pip[@]}" "recbole==1.2.1" "torch==2.13.0" "numpy<2" "pandas<3" "setuptools>=77.0.3,<81" \
  "scipy<1.14" psutil
.venv-bench/bin/python -c "import recbole, torch, numpy; print('recbole', recbole.__version__, \
'torch', torch.__version__, 'numpy', numpy.__version__)"
echo "installed RecBole into $(pwd)/.venv-bench"
