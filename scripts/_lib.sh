# Shared by the setup scripts (sourced from the repository root, never run on its own).
#
#   INSTALLER   uv (default) or pip. uv (the version pinned below, installed with pip into .venv-uv/)
#               installs the same locked set several times faster than pip. It is handed the
#               find-links and constraint files that pip's configuration names (`pip config list`), so
#               torch's CPU build still comes from find-links; it reads no other pip setting.
#   PYTHON      interpreter for the virtual environments (default: python3).
#   TORCH_SPEC  torch requirement installed when the environment has no torch yet (default:
#               torch==2.13.0, which takes the CPU build from pip's find-links where the machine has
#               one). Set it to e.g. "torch" to use whatever build your platform's index serves, or
#               install torch yourself beforehand: an installed torch is held where it is.

PYTHON=${PYTHON:-python3}
INSTALLER=${INSTALLER:-uv}
UV_VERSION=0.13.9
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
UV_VENV=.venv-uv

# make_venv DIR: a virtual environment at DIR, unless one is there.
make_venv() {
    [ -x "$1/bin/python" ] || "$PYTHON" -m venv "$1"
}

# stamp_of FILE...: a short hash of the files' contents (a missing file or `none` counts as empty).
stamp_of() {
    local f
    for f in "$@"; do
        [ -f "$f" ] && cat "$f"
        echo "--$f"
    done | sha256sum | cut -c1-16
}

# pip_config VENV KEY: the values pip's configuration gives KEY (find-links, constraint), one a line.
pip_config() {
    "$1/bin/python" -m pip config list 2>/dev/null |
        sed -n "s/^[^=]*\.$2='\(.*\)'\$/\1/p" | tr ' ' '\n' | sed '/^$/d' | sort -u
}

ensure_uv() {
    if [ -x "$UV_VENV/bin/uv" ] && [ "$("$UV_VENV/bin/uv" --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
        return 0
    fi
    make_venv "$UV_VENV"
    "$UV_VENV/bin/python" -m pip -q --disable-pip-version-check install "uv==$UV_VERSION"
}

# install_into VENV ARGS...: `pip install ARGS` into VENV, by uv or pip (INSTALLER).
install_into() {
    local venv=$1 x
    shift
    if [ "$INSTALLER" = uv ]; then
        ensure_uv
        local opts=(--python "$venv/bin/python" --quiet)
        while read -r x; do opts+=(--find-links "$x"); done < <(pip_config "$venv" find-links)
        while read -r x; do opts+=(--constraint "$x"); done < <(pip_config "$venv" constraint)
        "$UV_VENV/bin/uv" pip install "${opts[@]}" "$@"
    elif [ "$INSTALLER" = pip ]; then
        "$venv/bin/python" -m pip -q --disable-pip-version-check install "$@"
    else
        echo "setup: INSTALLER=$INSTALLER is not one of uv, pip" >&2
        return 1
    fi
}

# uninstall_from VENV NAME...: remove the packages from VENV (missing ones are skipped).
uninstall_from() {
    local venv=$1
    shift
    if [ "$INSTALLER" = uv ]; then
        ensure_uv
        "$UV_VENV/bin/uv" pip uninstall --quiet --python "$venv/bin/python" "$@" 2>/dev/null || true
    else
        "$venv/bin/python" -m pip -q --disable-pip-version-check uninstall -y "$@" 2>/dev/null || true
    fi
}

# installed_torch VENV: the torch version installed in VENV, or nothing.
installed_torch() {
    "$1/bin/python" -c "import importlib.metadata as m; print(m.version('torch'))" 2>/dev/null || true
}

# torch_requirement VENV: TORCH_SPEC when VENV has no torch yet, else nothing (the installed one is held).
torch_requirement() {
    [ -n "$(installed_torch "$1")" ] || echo "$TORCH_SPEC"
}

# write_constraints VENV LOCK OUT [LINE...]: the constraints every install step of VENV runs under:
# LOCK's pins (none: no pins) with torch held at the installed build, else at TORCH_SPEC, plus LINEs.
write_constraints() {
    local venv=$1 lock=$2 out=$3 torch
    shift 3
    torch=$(installed_torch "$venv")
    {
        if [ "$lock" != none ]; then
            grep -v -E '^[[:space:]]*(#|$)' "$lock" | grep -v -i -E '^torch[[:space:]]*=='
        fi
        if [ -n "$torch" ]; then echo "torch==$torch"; else echo "$TORCH_SPEC"; fi
        [ $# -eq 0 ] || printf '%s\n' "$@"
    } >"$out"
}

# record_resolved VENV: write what the resolver chose to VENV/.counterpoint-resolved.txt (what
# scripts/lock.py copies into a lock), before any clean-up step removes packages.
record_resolved() {
    "$1/bin/python" scripts/lock.py freeze >"$1/.counterpoint-resolved.txt"
}

# check_lock VENV LOCK [ARGS...]: fail unless VENV holds exactly LOCK's set (skipped for LOCK=none).
check_lock() {
    local venv=$1 lock=$2
    shift 2
    [ "$lock" = none ] || "$venv/bin/python" scripts/lock.py check "$lock" "$@"
}
