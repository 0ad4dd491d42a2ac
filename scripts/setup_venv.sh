#!/usr/bin/env bash
# Create / update the project-local virtual environment in .venv (idempotent).
#
# torch: if QUANTVIZ_TORCH is set it is installed as given (e.g. "torch==2.5.1").
# Otherwise a CPU torch wheel already on this machine's disk (any folder in
# pip's find-links) is used when one matches this Python, which keeps set-up to
# a minute on machines that ship one; elsewhere pip resolves "torch>=2.4" as
# usual. Everything else comes from pyproject.toml: the app, all extras, the
# test tools and the docs tools (make docs).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
VENV=.venv
STAMP="$VENV/.quantviz-installed"
WANT="$(cat pyproject.toml scripts/setup_venv.sh | sha256sum | cut -d' ' -f1)"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && "$VENV/bin/python" -c "import quantviz, torch, PySide6, pyqtgraph" 2>/dev/null; then
  exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "quantviz: creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

# uv installs the same packages as pip, several times faster (a fresh set-up here: ~20 s instead of
# ~2 min). It is a pip-installable wheel; if it cannot be had, pip does the work as before. uv does
# not read pip's configuration, so the find-links / extra indexes / constraints pip is configured
# with (a machine's local wheel folders, say) are handed to it.
INSTALL=("${PIP[@]}" install)
if [ -z "${QUANTVIZ_NO_UV:-}" ] && "${PIP[@]}" install -q uv >/dev/null 2>&1 && [ -x "$VENV/bin/uv" ]; then
  INSTALL=("$VENV/bin/uv" pip install --python "$VENV/bin/python" --index-strategy unsafe-best-match)
  for l in ${PIP_FIND_LINKS:-} $("${PIP[@]}" config get global.find-links 2>/dev/null || true); do
    INSTALL+=(--find-links "$l")
  done
  for u in ${PIP_EXTRA_INDEX_URL:-} $("${PIP[@]}" config get global.extra-index-url 2>/dev/null || true); do
    INSTALL+=(--extra-index-url "$u")
  done
  c="$("${PIP[@]}" config get global.constraint 2>/dev/null || true)"
  if [ -n "$c" ] && [ -f "$c" ]; then INSTALL+=(--constraint "$c"); fi
fi

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  if [ -n "${QUANTVIZ_TORCH:-}" ]; then
    "${INSTALL[@]}" "$QUANTVIZ_TORCH"
  else
    tag="cp$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}{sys.version_info[1]}")')"
    links="${PIP_FIND_LINKS:-} $("${PIP[@]}" config get global.find-links 2>/dev/null || true)"
    wheel=""
    for d in $links; do
      d="${d#file://}"
      [ -d "$d" ] || continue
      cand="$(ls "$d"/torch-*+cpu-"$tag"-*.whl 2>/dev/null | sort -V | tail -n 1 || true)"
      if [ -n "$cand" ]; then wheel="$cand"; fi
    done
    if [ -n "$wheel" ]; then
      echo "quantviz: installing the local CPU wheel $(basename "$wheel")" >&2
      "${INSTALL[@]}" "$wheel"
    else
      "${INSTALL[@]}" "torch>=2.4"
    fi
  fi
fi

echo "quantviz: installing quantviz with all extras, test and docs tools" >&2
"${INSTALL[@]}" -q -e ".[all,test,docs]" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
echo "$WANT" > "$STAMP"
