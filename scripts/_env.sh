# Shared by scripts/demo and scripts/test: a virtualenv with the project installed, and a
# PostgreSQL to talk to. Sourced, not run.
#
#   AIOTASKQ_PYTHON   Python version to use (default: the one in .python-version)
#   AIOTASKQ_DJANGO   pip requirement for Django (default: the newest 6.x)
#   AIOTASKQ_VENV     where the virtualenv lives (default: .venv)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY_VERSION=${AIOTASKQ_PYTHON:-$(cat .python-version)}
DJANGO_SPEC=${AIOTASKQ_DJANGO:-"Django>=6.0,<7"}
VENV=${AIOTASKQ_VENV:-$ROOT/.venv}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

find_python() {
    local candidate
    for candidate in "python$PY_VERSION" "$(pyenv root 2>/dev/null)/versions/$PY_VERSION"*/bin/python; do
        if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys' 2>/dev/null; then
            command -v "$candidate"
            return
        fi
    done
    echo "Python $PY_VERSION was not found: install it (for example with pyenv) or set AIOTASKQ_PYTHON." >&2
    exit 1
}

ensure_venv() {
    local stamp="$VENV/.installed" want
    want="$PY_VERSION|$DJANGO_SPEC|$(sha256sum pyproject.toml | cut -c1-16)"
    if [ ! -x "$VENV/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        say "Creating $VENV (Python $PY_VERSION, $DJANGO_SPEC)"
        rm -rf "$VENV"
        "$(find_python)" -m venv "$VENV"
        "$VENV/bin/python" -m pip install --quiet --upgrade pip
        "$VENV/bin/python" -m pip install --quiet -e ".[dev]" "$DJANGO_SPEC" "uvicorn>=0.30" "httpx>=0.27"
        echo "$want" > "$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

ensure_postgres() {
    local host=${PGHOST:-127.0.0.1} port=${PGPORT:-5432}
    if pg_isready -q -h "$host" -p "$port" 2>/dev/null; then
        return
    fi
    if command -v pg_lsclusters >/dev/null 2>&1; then
        say "Starting PostgreSQL"
        pg_lsclusters --no-header | while read -r version cluster _; do
            pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start || true
        done
        for _ in $(seq 1 60); do
            pg_isready -q -h "$host" -p "$port" && return
            sleep 0.5
        done
    fi
    echo "No PostgreSQL answers on $host:$port. Start one, or point PGHOST/PGPORT/PGUSER at one." >&2
    exit 1
}
