#!/usr/bin/env bash
# Release builds of tether-agent for the Raspberry Pi targets, on a plain Debian x86_64
# machine without Docker (`cross` does the same in containers; see cross.toml).
#
# usage: scripts/pi/build.sh [--strict] [TARGET...|all]
#   default targets: aarch64-unknown-linux-gnu (64-bit Pi OS), armv7-unknown-linux-gnueabihf
#   (32-bit Pi OS, Pi 2/3/4), arm-unknown-linux-musleabihf (Pi Zero/1, static).
#   Also known: aarch64-unknown-linux-musl, armv7-unknown-linux-musleabihf (static), and
#   x86_64-unknown-linux-gnu; `all` is the default set plus the two musl ones.
#
# The glibc targets use Debian's cross gcc as linker and rustup's std. The musl targets that
# rustup serves a std for (aarch64 here) are linked by the toolchain's rust-lld against that
# std's own musl (static, no cross gcc). ARMv6, and a musl target rustup serves no std for
# (armv7 here), are built with nightly, rust-src and -Zbuild-std, linked by zig from PyPI
# (ziglang, cargo-zigbuild). Those are best effort: when their toolchain cannot be had the
# target is skipped with a message (--strict or TETHER_PI_STRICT=1 makes that an error).
# Everything missing is installed, idempotently. Prints the size of each (stripped: the
# release profile strips) and its build time.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PI_ROOT"

strict="${TETHER_PI_STRICT:-0}"
targets=()
for arg in "$@"; do
    case "$arg" in
        --strict) strict=1 ;;
        -h | --help) sed -n '2,19p' "$0"; exit 0 ;;
        -*) pi_die "unknown option $arg" ;;
        *) targets+=("$arg") ;;
    esac
done
[ ${#targets[@]} -gt 0 ] || targets=("${PI_DEFAULT_TARGETS[@]}")
mapfile -t targets < <(pi_expand_targets "${targets[@]}")

# Nightly with rust-src, and zig: everything -Zbuild-std needs. Returns non-zero with the
# reason on stderr when it cannot be had.
ensure_build_std_toolchain() {
    if ! rustup run "$PI_NIGHTLY" rustc --version >/dev/null 2>&1; then
        pi_say "installing the $PI_NIGHTLY toolchain"
        rustup toolchain install "$PI_NIGHTLY" --profile minimal --component rust-src >&2 \
            || { pi_say "rustup cannot install $PI_NIGHTLY"; return 1; }
    fi
    if ! rustup component list --toolchain "$PI_NIGHTLY" --installed 2>/dev/null | grep -q '^rust-src'; then
        rustup component add rust-src --toolchain "$PI_NIGHTLY" >&2 \
            || { pi_say "rustup cannot add rust-src to $PI_NIGHTLY"; return 1; }
    fi
    install_zig || return 1
    command -v cargo-zigbuild >/dev/null 2>&1 \
        || { pi_say "cargo-zigbuild is installed but not on PATH"; return 1; }
    have_zig || { pi_say "no zig (neither on PATH nor python3 -m ziglang)"; return 1; }
}

# ziglang and cargo-zigbuild from PyPI, into a virtualenv under the target dir: Debian's
# python3 refuses `pip install` outside one (PEP 668), and one zig for every build (another
# one on PATH would relink everything). Its bin/ goes first on PATH, so cargo-zigbuild finds
# that python3 and its ziglang.
PI_VENV="$PI_TARGET_DIR/pi-tools/venv"
install_zig() {
    if [ ! -x "$PI_VENV/bin/pip" ]; then
        python3 -m venv "$PI_VENV" >/dev/null 2>&1 || {
            rm -rf "$PI_VENV"
            pi_apt python3-venv || { pi_say "cannot install python3-venv"; return 1; }
            python3 -m venv "$PI_VENV" >&2 || { pi_say "python3 -m venv failed"; return 1; }
        }
    fi
    if [ ! -x "$PI_VENV/bin/cargo-zigbuild" ]; then
        pi_say "installing ziglang and cargo-zigbuild from PyPI into ${PI_VENV#"$PI_ROOT"/}"
        "$PI_VENV/bin/pip" install --quiet --disable-pip-version-check ziglang cargo-zigbuild >&2 \
            || { pi_say "pip cannot install ziglang and cargo-zigbuild"; return 1; }
    fi
    export PATH="$PI_VENV/bin:$PATH"
    hash -r
}

# cargo-zigbuild uses zig from PATH, else the ziglang Python package.
have_zig() {
    command -v zig >/dev/null 2>&1 || python3 -m ziglang version >/dev/null 2>&1
}

ensure_stable_target() {
    local t="$1" pkgs
    pkgs="$(pi_linker_packages "$t")"
    if [ -n "$pkgs" ]; then
        # shellcheck disable=SC2086
        pi_apt $pkgs || pi_die "cannot install the linker for $t ($pkgs)"
    fi
    if ! rustup target list --installed | grep -qx "$t"; then
        rustup target add "$t" >&2 || pi_die "rustup cannot add target $t"
    fi
}

build_one() {
    local t="$1"
    pi_export_target_env "$t"
    if pi_is_build_std "$t"; then
        # zig links against its own musl crt, not Rust's self-contained copy.
        CARGO_TARGET_DIR="$PI_NIGHTLY_TARGET_DIR" RUSTFLAGS='-C link-self-contained=no' \
            cargo "+$PI_NIGHTLY" zigbuild -p tether-agent --release --locked --target "$t" \
            -Zbuild-std=std,panic_abort
    else
        cargo build -p tether-agent --release --locked --target "$t"
    fi
}

summary=()
failed=0
for t in "${targets[@]}"; do
    pi_runner "$t" >/dev/null || pi_die "unknown target $t"
    case "$t" in
        aarch64-unknown-linux-musl | armv7-unknown-linux-musleabihf)
            # rustup's std where it is served; else pi_is_build_std picks -Zbuild-std.
            if ! pi_std_installed "$t" && ! rustup target add "$t" >/dev/null 2>&1; then
                pi_say "rustup serves no std for $t: nightly -Zbuild-std instead"
            fi ;;
    esac
    if pi_is_build_std "$t"; then
        if ! ensure_build_std_toolchain; then
            msg="SKIPPED: no nightly/rust-src/zig toolchain for -Zbuild-std on this machine"
            pi_say "$t $msg"
            summary+=("$(printf '%-34s %s' "$t" "$msg")")
            [ "$strict" = 1 ] && failed=1
            continue
        fi
    else
        ensure_stable_target "$t"
    fi
    pi_say "building tether-agent for $t"
    start=$(date +%s)
    if ! build_one "$t"; then
        summary+=("$(printf '%-34s %s' "$t" "FAILED")")
        failed=1
        continue
    fi
    secs=$(($(date +%s) - start))
    bin="$(pi_agent_path "$t")"
    [ -f "$bin" ] || pi_die "$bin missing after the build"
    bytes=$(stat -c %s "$bin")
    summary+=("$(printf '%-34s %9d bytes (%4d KiB)  %4ds  %s' "$t" "$bytes" $((bytes / 1024)) "$secs" "${bin#"$PI_ROOT"/}")")
done

printf '\n%-34s %s\n' "target" "stripped size, build time, binary"
printf '%s\n' "${summary[@]}"
exit "$failed"
