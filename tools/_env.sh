# Sourced by run.sh / test.sh / bench: creates .venv on first use and installs xattr into it.
# The stamp holds a hash of pyproject.toml, so a changed dependency list triggers a re-install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${XATTR_VENV:-$ROOT/.venv}"
PY="${PYTHON:-python3}"
extras="${XATTR_EXTRAS:-dev}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[xattr] creating $VENV" >&2
  "$PY" -m venv "$VENV"
fi
stamp="$VENV/.xattr-installed"
want="$(cat "$ROOT/pyproject.toml" | sha256sum | cut -c1-16)-$extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[xattr] installing xattr[$extras] into $VENV" >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$ROOT[$extras]" >&2
  echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
cd "$ROOT"
