#!/usr/bin/env bash
# `.deb` packages of tether-agent, one per target, from the builds of build.sh (cargo-deb
# metadata in agent/linux/Cargo.toml, maintainer scripts and unit in agent/linux/pkg/).
#
# usage: scripts/pi/deb.sh [--tools-only] [TARGET...]
#   --tools-only: install what packaging needs (cargo-deb, dpkg-dev) and stop; CI does it
#   early, in the background.
#   default: aarch64-unknown-linux-gnu (arm64) and arm-unknown-linux-musleabihf (armhf: the
#   static ARMv6 build runs on every 32-bit Pi, Zero/1 included; when it cannot be built,
#   armv7-unknown-linux-gnueabihf instead, whose postinst refuses an ARMv6 board).
#   x86_64-unknown-linux-gnu gives the amd64 package that check-deb.sh installs here, and
#   tether-cli's (tetherctl, for the operator's machine) and tether-master's (amd64 only).
# Writes target/debian/<target>/tether-agent_<version>_<arch>.deb (and tether-cli_*.deb,
# tether-master_*.deb) and prints the paths. The man pages and shell completions in them are generated here, on the
# build machine: the agent's from its flag table (tether-agent-docs, feature cli-docs: the
# agent itself links no clap), tetherctl's by the built tetherctl.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PI_ROOT"

tools_only=0
if [ "${1:-}" = --tools-only ]; then
    tools_only=1
    shift
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(aarch64-unknown-linux-gnu arm-unknown-linux-musleabihf)
fi

pi_apt dpkg-dev xz-utils || pi_die "cannot install dpkg-dev"
# A known version: a new cargo-deb release cannot change the packages or CI unannounced.
CARGO_DEB_VERSION="${TETHER_CARGO_DEB_VERSION:-3.8.0}"
if ! command -v cargo-deb >/dev/null 2>&1; then
    pi_say "installing cargo-deb $CARGO_DEB_VERSION"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >&2 \
        || pi_die "cannot install cargo-deb $CARGO_DEB_VERSION"
fi
[ "$tools_only" = 0 ] || exit 0

# The Debian packages of the shared libraries an ELF binary needs, with the glibc version
# its symbols require; empty for a static binary.
shlib_depends() {
    local bin="$1" lib libc=0 glibc deps=()
    for lib in $(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        case "$lib" in
            libc.so.6 | libm.so.6 | libpthread.so.0 | libdl.so.2 | librt.so.1) libc=1 ;;
            libgcc_s.so.1) deps+=(libgcc-s1) ;;
            *) pi_die "$bin needs $lib, which no Depends names" ;;
        esac
    done
    if [ "$libc" = 1 ]; then
        glibc="$(readelf -V "$bin" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n1)"
        deps=("libc6 (>= $glibc)" "${deps[@]}")
    fi
    local IFS=,
    printf '%s' "${deps[*]}" | sed 's/,/, /g'
}

# Puts the shared-library dependencies in front of the package's own Depends.
add_depends() {
    local deb="$1" extra="$2" tree
    [ -n "$extra" ] || return 0
    tree="$(mktemp -d)"
    dpkg-deb -R "$deb" "$tree/pkg"
    sed -i "s/^Depends: /Depends: $extra, /" "$tree/pkg/DEBIAN/control"
    grep -q '^Depends: ' "$tree/pkg/DEBIAN/control" || pi_die "no Depends in $deb"
    dpkg-deb --root-owner-group -Zxz -b "$tree/pkg" "$deb" >/dev/null
    rm -rf "$tree"
}

# tetherctl's package: the release build, its man pages (one per command) and completions.
cli_deb() {
    local t="$1" out="$2" docs ctl shell
    cargo build -q -p tether-cli --release --locked --target "$t" >&2 \
        || pi_die "cannot build tetherctl for $t"
    ctl="$PI_TARGET_DIR/$t/release/tetherctl"
    # The assets' target/release/cli-docs/ is cargo-deb's name for this directory.
    docs="$PI_TARGET_DIR/$t/release/cli-docs"
    rm -rf "$docs"
    mkdir -p "$docs"
    "$ctl" man --dir "$docs" || pi_die "tetherctl cannot write its man pages"
    gzip -9n "$docs"/*.1
    for shell in bash zsh fish; do
        "$ctl" completions "$shell" >"$docs/tetherctl.$shell" \
            || pi_die "tetherctl cannot write its $shell completion"
    done
    CARGO_TARGET_DIR="$PI_TARGET_DIR" cargo deb -p tether-cli --target "$t" --no-build \
        --no-strip --multiarch none -o "$out/" >&2
    printf '%s\n' "$out"/tether-cli_*.deb
}

# The master's package: the release build, its unit and default config (master/pkg/); the
# packaged binary must accept the packaged config.
master_deb() {
    local t="$1" out="$2" bin deb tree
    cargo build -q -p tether-master --release --locked --target "$t" >&2 \
        || pi_die "cannot build tether-master for $t"
    bin="$PI_TARGET_DIR/$t/release/tether-master"
    CARGO_TARGET_DIR="$PI_TARGET_DIR" cargo deb -p tether-master --target "$t" --no-build \
        --no-strip --multiarch none -o "$out/" >&2
    deb="$(ls "$out"/tether-master_*.deb)"
    add_depends "$deb" "$(shlib_depends "$bin")"
    tree="$(mktemp -d)"
    dpkg-deb -x "$deb" "$tree"
    "$tree/usr/bin/tether-master" check-config --config "$tree/etc/tether/master.toml" >/dev/null \
        || { rm -rf "$tree"; pi_die "the master in $deb does not run or rejects its config"; }
    rm -rf "$tree"
    printf '%s\n' "$deb"
}

pi_apt binutils qemu-user || pi_die "cannot install binutils (readelf) and qemu-user"
bash scripts/pi/build.sh "${targets[@]}" >&2 || true
docs="$PI_TARGET_DIR/agent-docs"
rm -rf "$docs"
cargo run -q --locked -p tether-agent --features cli-docs --bin tether-agent-docs -- \
    --dir "$docs" >/dev/null || pi_die "cannot generate the agent's man page and completions"
# Debian ships man pages gzipped; -n keeps the package reproducible (no name, no time).
gzip -9n "$docs/tether-agent.1"
for t in "${targets[@]}"; do
    bin="$(pi_agent_path "$t")"
    if [ ! -x "$bin" ] && [ "$t" = arm-unknown-linux-musleabihf ]; then
        pi_say "no ARMv6 build; the armhf package gets the ARMv7 agent (not for Pi Zero/1)"
        t=armv7-unknown-linux-gnueabihf
        bash scripts/pi/build.sh "$t" >&2 || pi_die "cannot build $t"
        bin="$(pi_agent_path "$t")"
    fi
    [ -x "$bin" ] || pi_die "$bin was not built"
    out="$PI_TARGET_DIR/debian/$t"
    mkdir -p "$out"
    rm -f "$out"/*.deb
    # cargo-deb finds the binary under <target dir>/<target>/release; the release profile
    # already stripped it (no cross strip needed).
    target_dir="$PI_TARGET_DIR"
    pi_is_build_std "$t" && target_dir="$PI_NIGHTLY_TARGET_DIR"
    # The assets' target/release/agent-docs/ is cargo-deb's name for this directory.
    rm -rf "$target_dir/$t/release/agent-docs"
    cp -r "$docs" "$target_dir/$t/release/agent-docs"
    CARGO_TARGET_DIR="$target_dir" cargo deb -p tether-agent --target "$t" --no-build \
        --no-strip --multiarch none -o "$out/" >&2
    deb="$(ls "$out"/tether-agent_*.deb)"
    add_depends "$deb" "$(shlib_depends "$bin")"
    arch="$(dpkg-deb -f "$deb" Architecture)"
    [ "$arch" = "$(pi_deb_arch "$t")" ] || pi_die "$deb is for $arch, expected $(pi_deb_arch "$t")"
    # The packaged binary runs (under qemu for ARM) and accepts the packaged config once
    # provisioning has added the keys.
    tree="$(mktemp -d)"
    dpkg-deb -x "$deb" "$tree"
    # shellcheck disable=SC2046
    $(pi_runner "$t") "$tree/usr/bin/tether-agent" check-config \
        --config "$tree/etc/tether/agent.toml" "${PI_TEST_KEYS[@]}" >/dev/null \
        || { rm -rf "$tree"; pi_die "the agent in $deb does not run or rejects its config"; }
    rm -rf "$tree"
    printf '%s\n' "$deb"
    if [ "$t" = x86_64-unknown-linux-gnu ]; then
        cli_deb "$t" "$out"
        master_deb "$t" "$out"
    fi
done
