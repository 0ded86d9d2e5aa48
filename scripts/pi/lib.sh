# shellcheck shell=bash disable=SC2034
# Shared by the scripts in scripts/pi (sourced, not run): the Pi targets, what each needs to
# build and to run under qemu-user, and idempotent installs of that.
#
# No .cargo/config.toml: linkers and runners are exported here per target, so a developer's
# host builds never see them.

PI_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PI_TARGET_DIR="${CARGO_TARGET_DIR:-$PI_ROOT/target}"
# The ARMv6 build uses another toolchain (nightly); its own target dir keeps it from
# invalidating the stable host build scripts in the shared one.
PI_NIGHTLY="${TETHER_PI_NIGHTLY:-nightly}"
PI_NIGHTLY_TARGET_DIR="$PI_TARGET_DIR/pi-nightly"

# The default set: 64-bit Pi OS, 32-bit Pi OS on Pi 2/3/4, Pi Zero/1 (static).
PI_DEFAULT_TARGETS=(aarch64-unknown-linux-gnu armv7-unknown-linux-gnueabihf arm-unknown-linux-musleabihf)
# Fully static builds for 64-bit and 32-bit (ARMv7) boards.
PI_MUSL_TARGETS=(aarch64-unknown-linux-musl armv7-unknown-linux-musleabihf)

# Expands `all` to every known Pi target (the default set and the musl variants).
pi_expand_targets() {
    local t
    for t in "$@"; do
        if [ "$t" = all ]; then
            printf '%s\n' "${PI_DEFAULT_TARGETS[@]}" "${PI_MUSL_TARGETS[@]}"
        else
            printf '%s\n' "$t"
        fi
    done
}

pi_say() { printf '==> %s\n' "$*" >&2; }
pi_die() { printf 'error: %s\n' "$*" >&2; exit 1; }

# Root runs apt-get itself; anyone else needs sudo without a password or the packages already.
pi_sudo() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# Installs the Debian packages that are missing; does nothing (and needs no network) when
# every one is there.
PI_APT_UPDATED=
pi_apt() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null || { pi_say "no apt-get to install ${missing[*]}"; return 1; }
    pi_say "installing ${missing[*]}"
    if [ -z "$PI_APT_UPDATED" ]; then
        DEBIAN_FRONTEND=noninteractive pi_sudo apt-get update -qq || return 1
        PI_APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive pi_sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

pi_env_name() { printf '%s' "$1" | tr 'a-z-' 'A-Z_'; }

# Debian packages a target's linker and C compiler come from (none for the zig builds).
pi_linker_packages() {
    if pi_is_build_std "$1"; then return 0; fi
    case "$1" in
        aarch64-*) echo gcc-aarch64-linux-gnu libc6-dev-arm64-cross ;;
        armv7-*) echo gcc-arm-linux-gnueabihf libc6-dev-armhf-cross ;;
        *) ;;
    esac
}

# The cross gcc of a target's architecture, for the C in its dependencies (ring): cc-rs
# would look for a musl-named gcc that Debian does not have. ring's C is freestanding, so
# the glibc-targeted gcc compiles it for a musl binary as well.
pi_cc() {
    if pi_is_build_std "$1"; then return 0; fi
    case "$1" in
        aarch64-unknown-linux-musl) echo aarch64-linux-gnu ;;
        armv7-unknown-linux-musleabihf) echo arm-linux-gnueabihf ;;
        *) ;;
    esac
}

pi_linker() {
    # The -Zbuild-std targets are linked by zig (cargo-zigbuild sets their linker).
    if pi_is_build_std "$1"; then return 0; fi
    case "$1" in
        aarch64-unknown-linux-gnu) echo aarch64-linux-gnu-gcc ;;
        armv7-unknown-linux-gnueabihf) echo arm-linux-gnueabihf-gcc ;;
        # Static: rustup's musl std brings its own crt objects and libc (self-contained),
        # and the toolchain its own lld, so no cross gcc is involved.
        *-musl | *-musleabihf) echo rust-lld ;;
        *) ;;
    esac
}

# How to run a target's binary on this x86 machine. binfmt_misc is not mounted here, so
# qemu is named explicitly. The glibc targets get the cross libc both as the loader's prefix
# (-L) and as LD_LIBRARY_PATH: with -L alone, a host that also has libc6:arm64 or
# libc6:armhf installed hands the cross loader the multiarch libc from ld.so.cache, two
# glibc builds mix and every thread spins forever. The CPU is the smallest board of the
# target, so an instruction it lacks faults here and not on a customer's Pi.
pi_runner() {
    case "$1" in
        aarch64-unknown-linux-gnu)
            echo "qemu-aarch64 -cpu cortex-a53 -L /usr/aarch64-linux-gnu -E LD_LIBRARY_PATH=/usr/aarch64-linux-gnu/lib" ;;
        aarch64-unknown-linux-musl)
            echo "qemu-aarch64 -cpu cortex-a53" ;;
        armv7-unknown-linux-gnueabihf)
            echo "qemu-arm -cpu cortex-a7 -L /usr/arm-linux-gnueabihf -E LD_LIBRARY_PATH=/usr/arm-linux-gnueabihf/lib" ;;
        armv7-unknown-linux-musleabihf)
            echo "qemu-arm -cpu cortex-a7" ;;
        # Debian's armhf libc is ARMv7 and faults on this CPU; only the static musl build runs.
        arm-unknown-linux-musleabihf | arm-unknown-linux-gnueabihf)
            echo "qemu-arm -cpu arm1176" ;;
        x86_64-unknown-linux-gnu) ;;
        *) return 1 ;;
    esac
}

# Exports CARGO_TARGET_<TRIPLE>_LINKER and _RUNNER for one target (only for this process).
pi_export_target_env() {
    local t="$1" up linker runner
    up="$(pi_env_name "$t")"
    linker="$(pi_linker "$t")"
    runner="$(pi_runner "$t")" || true
    if [ -n "$linker" ]; then export "CARGO_TARGET_${up}_LINKER=$linker"; fi
    if [ -n "$runner" ]; then export "CARGO_TARGET_${up}_RUNNER=$runner"; fi
    local cc under
    cc="$(pi_cc "$t")"
    under="$(printf '%s' "$t" | tr - _)"
    if [ -n "$cc" ]; then
        export "CC_${under}=$cc-gcc" "AR_${under}=$cc-ar"
    fi
}

# Whether rustup's std for a target is installed (a local query; build.sh tries
# `rustup target add` first).
pi_std_installed() {
    rustup target list --installed 2>/dev/null | grep -qx "$1"
}

# Built with nightly's -Zbuild-std and linked by zig: ARMv6 always (the route that was seen
# to give a binary an arm1176 runs), the other musl targets when rustup serves no std for
# them (armv7-unknown-linux-musleabihf here).
pi_is_build_std() {
    case "$1" in
        arm-unknown-linux-musleabihf | arm-unknown-linux-gnueabihf) return 0 ;;
        aarch64-unknown-linux-musl | armv7-unknown-linux-musleabihf) ! pi_std_installed "$1" ;;
        *) return 1 ;;
    esac
}

# Where `build.sh` leaves a target's agent.
pi_agent_path() {
    if pi_is_build_std "$1"; then
        echo "$PI_NIGHTLY_TARGET_DIR/$1/release/tether-agent"
    else
        echo "$PI_TARGET_DIR/$1/release/tether-agent"
    fi
}

# The Debian architecture of a target's .deb.
pi_deb_arch() {
    case "$1" in
        aarch64-*) echo arm64 ;;
        armv7-* | arm-*) echo armhf ;;
        x86_64-*) echo amd64 ;;
        *) return 1 ;;
    esac
}

# A free TCP port on 127.0.0.1 (bound to port 0 and released; the window is tiny and a
# clash only fails the run, never passes it).
pi_free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# What `tetherctl provision` adds to a board's config, for checking a packaged config: the
# agent refuses to run without keys (a valid ed25519 point and any 32-byte secret).
# shellcheck disable=SC2034
PI_TEST_KEYS=(--master-key 5866666666666666666666666666666666666666666666666666666666666666
    --agent-key 1111111111111111111111111111111111111111111111111111111111111111)
