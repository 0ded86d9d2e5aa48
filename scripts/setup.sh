#!/usr/bin/env bash
# What the test suite needs beyond Rust, set up once, shared by scripts/test.sh and .ci/run:
# the rustup target and components, the Debian packages of scripts/packages.txt, the OpenAPI
# validator's venv, and cargo-nextest.
#
# As root with apt-get it installs what is missing (`--update` runs `apt-get update` first,
# as CI does on a fresh machine). Otherwise it installs nothing and says, in one line before
# anything is built, what is missing and the command that installs it; the tests that need
# it are then skipped with their reason.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
update=0
[ "${1:-}" = --update ] && update=1

say() { printf 'setup: %s\n' "$*" >&2; }

# --- Rust: the no_std proof's target, fmt and clippy ---
if command -v rustup >/dev/null 2>&1; then
    rustup target list --installed | grep -qx thumbv7em-none-eabihf \
        || rustup target add thumbv7em-none-eabihf >/dev/null
    rustup component add rustfmt clippy >/dev/null 2>&1 || true
fi

# --- Debian packages ---
mapfile -t wanted < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' -e '/^$/d' "$ROOT/scripts/packages.txt")
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for p in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if [ "$update" = 1 ] || [ ${#missing[@]} -gt 0 ]; then
        apt-get update -qq
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
elif [ ${#missing[@]} -gt 0 ]; then
    say "missing ${missing[*]} (their tests will be skipped): sudo apt-get install ${missing[*]}"
fi

# --- openapi-spec-validator (PyPI) in a venv of its own ---
venv="$ROOT/target/openapi-venv"
if [ ! -x "$venv/bin/openapi-spec-validator" ]; then
    if python3 -m venv "$venv" >/dev/null 2>&1 \
        && "$venv/bin/pip" install -q --disable-pip-version-check openapi-spec-validator; then
        :
    else
        say "cannot make the OpenAPI validator's venv (python3-venv, PyPI): its test is skipped"
    fi
fi

# --- cargo-nextest: retries for the suites that run real processes ---
if ! cargo nextest --version >/dev/null 2>&1; then
    say "installing cargo-nextest (cargo install --locked)"
    cargo install --locked cargo-nextest >/dev/null 2>&1 \
        || say "cannot install cargo-nextest: the tests run under cargo test, without retries"
fi
