#!/usr/bin/env bash
# Install the peer ODE solvers used by benchmarks/peers.py into a virtualenv.
#
# Usage:  bash benchmarks/install_peers.sh [PYTHON]
#
#   PYTHON  the virtualenv's python (default: .venv-bench/bin/python,
#           relative to the current directory). Create it first with
#           `python3 -m venv .venv-bench`.
#
# Installs numpy, scipy and numba (required), then the optional peers:
#   - numbalsoda     (LSODA callable from numba; source build, needs gfortran,
#                     which is apt-installed when missing; we run as root)
#   - scikit-sundae  (SUNDIALS CVODE; import name `sksundae`; manylinux wheel)
#
# Idempotent: anything already importable is skipped. An optional peer that
# fails to install does not fail the script: a line "PEER UNAVAILABLE: ..."
# says which one and why, and the script goes on. Exit status is non-zero only
# when the required packages (numpy, scipy, numba) cannot be installed.
set -u

PY="${1:-.venv-bench/bin/python}"
LOG_DIR="${TMPDIR:-/tmp}/kinetics-install-peers"
mkdir -p "$LOG_DIR"

if [ ! -x "$PY" ]; then
    echo "error: python '$PY' not found or not executable" >&2
    echo "       create it first: python3 -m venv .venv-bench" >&2
    exit 2
fi

say() { printf '[install_peers] %s\n' "$*"; }

importable() {  # importable MODULE -> status 0 when `import MODULE` works
    "$PY" -c "import $1" >/dev/null 2>&1
}

pip_install() {  # pip_install LOGNAME ARGS... -> pip's status; log kept
    local log="$LOG_DIR/$1.log"
    shift
    "$PY" -m pip install --disable-pip-version-check "$@" >"$log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        say "pip failed (log: $log); last lines:"
        tail -n 8 "$log" | sed 's/^/    /'
    fi
    return $rc
}

# --- required -----------------------------------------------------------
for mod in numpy scipy numba; do
    if importable "$mod"; then
        say "$mod: already installed"
    else
        say "$mod: installing"
        if ! pip_install "$mod" "$mod"; then
            echo "error: required package $mod could not be installed" >&2
            exit 1
        fi
    fi
done

declare -a AVAILABLE=() UNAVAILABLE=()

# --- numbalsoda ---------------------------------------------------------
install_numbalsoda() {
    if importable numbalsoda; then
        say "numbalsoda: already installed"
        return 0
    fi
    if ! command -v gfortran >/dev/null 2>&1; then
        if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
            UNAVAILABLE+=("numbalsoda: gfortran missing and cannot apt-get install it (not root or no apt-get)")
            return 1
        fi
        say "numbalsoda: gfortran missing; apt-get install gfortran cmake"
        local aptlog="$LOG_DIR/apt.log"
        if ! { apt-get update && DEBIAN_FRONTEND=noninteractive \
                apt-get install -y --no-install-recommends gfortran cmake; } \
                >"$aptlog" 2>&1; then
            tail -n 8 "$aptlog" | sed 's/^/    /'
            UNAVAILABLE+=("numbalsoda: apt-get install gfortran failed (log: $aptlog)")
            return 1
        fi
    fi
    say "numbalsoda: building from source (needs gfortran, cmake; a minute or two)"
    if ! pip_install numbalsoda numbalsoda; then
        UNAVAILABLE+=("numbalsoda: pip install (source build) failed (log: $LOG_DIR/numbalsoda.log)")
        return 1
    fi
    if ! importable numbalsoda; then
        UNAVAILABLE+=("numbalsoda: installed but 'import numbalsoda' fails")
        return 1
    fi
    return 0
}

# --- scikit-sundae (SUNDIALS CVODE) --------------------------------------
install_sksundae() {
    if importable sksundae; then
        say "scikit-sundae: already installed"
        return 0
    fi
    say "scikit-sundae: installing"
    if ! pip_install scikit-sundae scikit-sundae; then
        UNAVAILABLE+=("scikit-sundae: pip install failed (log: $LOG_DIR/scikit-sundae.log)")
        return 1
    fi
    if ! importable sksundae; then
        UNAVAILABLE+=("scikit-sundae: installed but 'import sksundae' fails")
        return 1
    fi
    return 0
}

install_numbalsoda && AVAILABLE+=(numbalsoda)
install_sksundae && AVAILABLE+=(scikit-sundae)

say "peers available: ${AVAILABLE[*]:-none}"
for line in "${UNAVAILABLE[@]+"${UNAVAILABLE[@]}"}"; do
    echo "PEER UNAVAILABLE: $line"
done
exit 0
