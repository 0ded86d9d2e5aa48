#!/usr/bin/env bash
# Builds the amd64 .debs and checks them for real: the agent's files and their modes, the
# conffile, the man page and shell completions (rendered, bash's run), the maintainer scripts
# through install, upgrade (local config edits and the journal kept), remove (config, state
# and user kept), reinstall and purge (all gone), `systemd-analyze verify` on the installed
# unit; tetherctl's package (tether-cli: binary, man pages, completions) installed and purged;
# the master's (tether-master: unit, conffile, user) through install, verify, upgrade, remove
# (config and store kept) and purge (config, user and state gone).
#
# usage: scripts/pi/check-deb.sh [--unpack]
#   As root with dpkg (CI), the package is installed on this machine and purged at the end
#   (refused if a tether-agent, tether-cli or tether-master package, or a `tether` or
#   `tether-master` user not made by it, is already there).
#   Otherwise, or with --unpack, it is only unpacked (dpkg-deb -x) and its files checked.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "$0")/lib.sh"
cd "$PI_ROOT"

mode=install
[ "${1:-}" = --unpack ] && mode=unpack
[ "$(id -u)" -eq 0 ] && command -v dpkg >/dev/null || mode=unpack

checks=0
failures=0
ok() { checks=$((checks + 1)); printf '  ok    %s\n' "$*"; }
bad() { checks=$((checks + 1)); failures=$((failures + 1)); printf '  FAIL  %s\n' "$*"; }
check() { # check DESCRIPTION COMMAND...
    local what="$1"
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}

T=x86_64-unknown-linux-gnu
debs="$(bash scripts/pi/deb.sh "$T")"
deb="$(grep '/tether-agent_[^/]*\.deb$' <<<"$debs")" || true
cli_deb="$(grep '/tether-cli_[^/]*\.deb$' <<<"$debs")" || true
[ -f "$deb" ] || pi_die "no tether-agent .deb from deb.sh"
[ -f "$cli_deb" ] || pi_die "no tether-cli .deb from deb.sh"
master_deb="$(grep '/tether-master_[^/]*\.deb$' <<<"$debs")" || true
[ -f "$master_deb" ] || pi_die "no tether-master .deb from deb.sh"
version="$(dpkg-deb -f "$deb" Version)"
pi_say "checking $deb ($mode)"

WORK="$(mktemp -d -t tether-deb.XXXXXX)"
installed=0
cli_installed=0
master_installed=0
cleanup() {
    if [ "$installed" = 1 ]; then dpkg -P tether-agent >/dev/null 2>&1 || true; fi
    if [ "$master_installed" = 1 ]; then dpkg -P tether-master >/dev/null 2>&1 || true; fi
    if [ "$cli_installed" = 1 ]; then dpkg -P tether-cli >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# --- the package itself ---
dpkg-deb -x "$deb" "$WORK/root"
dpkg-deb -e "$deb" "$WORK/control"
listing="$(dpkg-deb -c "$deb")"
mode_of() { awk -v p="./$1" '$NF == p {print $1}' <<<"$listing"; }
[ "$(mode_of usr/bin/tether-agent)" = -rwxr-xr-x ] && ok "usr/bin/tether-agent 0755" || bad "usr/bin/tether-agent mode $(mode_of usr/bin/tether-agent)"
[ "$(mode_of etc/tether/agent.toml)" = -rw-r----- ] && ok "etc/tether/agent.toml 0640" || bad "etc/tether/agent.toml mode $(mode_of etc/tether/agent.toml)"
check "the unit is agent/linux/pkg/tether-agent.service" \
    cmp "$WORK/root/usr/lib/systemd/system/tether-agent.service" agent/linux/pkg/tether-agent.service
check "the config is agent/linux/pkg/agent.toml" cmp "$WORK/root/etc/tether/agent.toml" agent/linux/pkg/agent.toml
check "conffiles lists /etc/tether/agent.toml" grep -qx /etc/tether/agent.toml "$WORK/control/conffiles"
for s in postinst prerm postrm; do
    check "$s present and executable" test -x "$WORK/control/$s"
    check "$s passes sh -n" sh -n "$WORK/control/$s"
done
check "prerm stops the unit on remove" grep -q 'deb-systemd-invoke stop tether-agent.service' "$WORK/control/prerm"
check "Depends names adduser | passwd" bash -c "dpkg-deb -f '$deb' Depends | grep -q 'adduser | passwd'"
check "Depends names the linked libraries (libc6, libgcc-s1)" \
    bash -c "dpkg-deb -f '$deb' Depends | grep -Eq '^libc6 \(>= 2\.[0-9]+\), libgcc-s1, '"
check "the packaged config runs tasks as tether-task" grep -qx 'user = "tether-task"' "$WORK/root/etc/tether/agent.toml"
check "the unit grants what switching to it takes" \
    grep -qx 'AmbientCapabilities=CAP_SETUID CAP_SETGID CAP_KILL' "$WORK/root/usr/lib/systemd/system/tether-agent.service"
# The man page and completions deb.sh generated from the agent's flag table.
MAN=usr/share/man/man1/tether-agent.1.gz
BASH_COMPLETION=usr/share/bash-completion/completions/tether-agent
DOCS=("$MAN" "$BASH_COMPLETION" usr/share/zsh/vendor-completions/_tether-agent
    usr/share/fish/vendor_completions.d/tether-agent.fish)
for f in "${DOCS[@]}"; do
    [ "$(mode_of "$f")" = -rw-r--r-- ] && ok "$f 0644" || bad "$f mode $(mode_of "$f")"
done
# roff spells the flag max\-tasks.
check "the man page is gzipped roff naming --max-tasks" \
    bash -c "zcat '$WORK/root/$MAN' | grep -qF 'max\-tasks'"
if command -v man >/dev/null; then
    check "man -l renders the page with --max-tasks and check-config" \
        bash -c "out=\"\$(MANWIDTH=100 man -l '$WORK/root/$MAN' 2>/dev/null)\" && grep -q -- '--max-tasks' <<<\"\$out\" && grep -q 'check-config' <<<\"\$out\""
else
    printf '  skip  man -l: man is not installed\n'
fi
# What `tether-agent check-config --max<TAB>` offers in bash.
bash_completes() {
    bash -c "source '$1'; COMP_WORDS=(tether-agent check-config --max); COMP_CWORD=2
        _tether__agent tether-agent --max check-config; [ \"\${COMPREPLY[*]}\" = --max-tasks ]"
}
check "the bash completion completes check-config --max to --max-tasks" bash_completes "$WORK/root/$BASH_COMPLETION"
check "the zsh completion is a #compdef for tether-agent" \
    grep -qx '#compdef tether-agent' "$WORK/root/usr/share/zsh/vendor-completions/_tether-agent"
check "the fish completion completes --max-tasks" \
    grep -q 'complete -c tether-agent .*-l max-tasks' "$WORK/root/usr/share/fish/vendor_completions.d/tether-agent.fish"

# tetherctl's package: the binary, a man page per command, completions that complete.
dpkg-deb -x "$cli_deb" "$WORK/cli"
cli_listing="$(dpkg-deb -c "$cli_deb")"
CLI_BASH=usr/share/bash-completion/completions/tetherctl
CLI_FILES=(usr/bin/tetherctl usr/share/man/man1/tetherctl.1.gz usr/share/man/man1/tetherctl-submit.1.gz
    "$CLI_BASH" usr/share/zsh/vendor-completions/_tetherctl usr/share/fish/vendor_completions.d/tetherctl.fish)
for f in "${CLI_FILES[@]}"; do
    want=-rw-r--r--
    [ "$f" = usr/bin/tetherctl ] && want=-rwxr-xr-x
    got="$(awk -v p="./$f" '$NF == p {print $1}' <<<"$cli_listing")"
    [ "$got" = "$want" ] && ok "tether-cli: $f $want" || bad "tether-cli: $f mode '$got'"
done
check "tether-cli: the packaged tetherctl runs" "$WORK/cli/usr/bin/tetherctl" --version
check "tether-cli: tetherctl.1 names the provision command" \
    bash -c "zcat '$WORK/cli/usr/share/man/man1/tetherctl.1.gz' | grep -q provision"
cli_completes() { # what `tetherctl subm<TAB>` offers in bash
    bash -c "source '$1'; COMP_WORDS=(tetherctl subm); COMP_CWORD=1
        _tetherctl tetherctl subm tetherctl; [ \"\${COMPREPLY[*]}\" = submit ]"
}
check "tether-cli: the bash completion completes subm to submit" cli_completes "$WORK/cli/$CLI_BASH"

# The master's package: binary, unit, conffile, maintainer scripts; its config accepted.
MASTER_UNIT=usr/lib/systemd/system/tether-master.service
dpkg-deb -x "$master_deb" "$WORK/master"
dpkg-deb -e "$master_deb" "$WORK/master-control"
master_listing="$(dpkg-deb -c "$master_deb")"
master_mode() { awk -v p="./$1" '$NF == p {print $1}' <<<"$master_listing"; }
[ "$(master_mode usr/bin/tether-master)" = -rwxr-xr-x ] && ok "tether-master: usr/bin/tether-master 0755" || bad "tether-master: usr/bin/tether-master mode $(master_mode usr/bin/tether-master)"
[ "$(master_mode etc/tether/master.toml)" = -rw-r----- ] && ok "tether-master: etc/tether/master.toml 0640" || bad "tether-master: etc/tether/master.toml mode $(master_mode etc/tether/master.toml)"
check "tether-master: the unit is master/pkg/tether-master.service" cmp "$WORK/master/$MASTER_UNIT" master/pkg/tether-master.service
check "tether-master: the config is master/pkg/master.toml" cmp "$WORK/master/etc/tether/master.toml" master/pkg/master.toml
check "tether-master: conffiles lists /etc/tether/master.toml" grep -qx /etc/tether/master.toml "$WORK/master-control/conffiles"
for s in postinst prerm postrm; do
    check "tether-master: $s present, executable, passes sh -n" \
        bash -c "test -x '$WORK/master-control/$s' && sh -n '$WORK/master-control/$s'"
done
check "tether-master: Depends names adduser | passwd and libc6" \
    bash -c "dpkg-deb -f '$master_deb' Depends | grep -Eq '^libc6 \(>= 2\.[0-9]+\).*adduser \| passwd'"
check "tether-master: the unit is Type=notify with a watchdog" \
    bash -c "grep -qx Type=notify '$WORK/master/$MASTER_UNIT' && grep -q '^WatchdogSec=' '$WORK/master/$MASTER_UNIT'"
check "tether-master: the packaged binary accepts the packaged config" \
    "$WORK/master/usr/bin/tether-master" check-config --config "$WORK/master/etc/tether/master.toml"
check "tether-master: the packaged config keeps the broker and the API on loopback" \
    bash -c "grep -qx 'listen = \"127.0.0.1:1883\"' '$WORK/master/etc/tether/master.toml' && grep -qx 'http = \"127.0.0.1:8080\"' '$WORK/master/etc/tether/master.toml'"

# The shipped config has no keys (`tetherctl provision` writes them; without them the agent
# refuses to start): it is checked as a provisioned board has it, the keys given as flags.
PROVISIONED=("${PI_TEST_KEYS[@]}")
check "the packaged config refuses to run without keys" \
    bash -c "! '$WORK/root/usr/bin/tether-agent' check-config --config '$WORK/root/etc/tether/agent.toml' 2>&1 | grep -q 'config ok'"
check "the packaged binary accepts the packaged config" \
    "$WORK/root/usr/bin/tether-agent" check-config --config "$WORK/root/etc/tether/agent.toml" "${PROVISIONED[@]}"

# --- the unit ---
verify_unit() {
    if ! command -v systemd-analyze >/dev/null; then
        printf '  skip  systemd-analyze verify: systemd-analyze is not installed\n'
        return
    fi
    # Only the unit's own findings: this machine may lack units it orders itself after.
    if out="$(systemd-analyze verify --man=no "$1" 2>&1)"; then
        ok "systemd-analyze verify $1"
    else
        bad "systemd-analyze verify $1:"
        printf '%s\n' "$out" | sed 's/^/        /'
    fi
    local exposure
    exposure="$(systemd-analyze security --offline=yes "$1" 2>/dev/null | tail -n1 | sed 's/.*: //')" || true
    [ -n "$exposure" ] && printf '  info  systemd-analyze security: %s\n' "$exposure"
}

if [ "$mode" = unpack ]; then
    printf '  skip  install, upgrade, remove, purge: not root or no dpkg (unpacked only)\n'
    # The unit names /usr/bin/tether-agent; verify it against the unpacked copy.
    if command -v systemd-analyze >/dev/null; then
        sed "s#/usr/bin/tether-agent#$WORK/root/usr/bin/tether-agent#g" \
            "$WORK/root/usr/lib/systemd/system/tether-agent.service" >"$WORK/tether-agent.service"
        verify_unit "$WORK/tether-agent.service"
        sed "s#/usr/bin/tether-master#$WORK/master/usr/bin/tether-master#g" \
            "$WORK/master/$MASTER_UNIT" >"$WORK/tether-master.service"
        verify_unit "$WORK/tether-master.service"
    else
        verify_unit none
    fi
    printf '%d passed, %d failed\n' $((checks - failures)) "$failures"
    [ "$failures" -eq 0 ]
    exit
fi

# --- install ---
for p in tether-agent tether-cli tether-master; do
    if dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -qv 'not-installed'; then
        pi_die "a $p package is already on this machine ($(dpkg-query -W -f='${Status}' "$p")); dpkg -P $p first"
    fi
done
getent passwd tether >/dev/null && pi_die "a user 'tether' already exists; this check would delete it on purge"
getent passwd tether-master >/dev/null && pi_die "a user 'tether-master' already exists; this check would delete it on purge"
getent passwd tether-task >/dev/null && pi_die "a user 'tether-task' already exists; this check would delete it on purge"

user_ok() {
    local line
    line="$(getent passwd tether)" || return 1
    IFS=: read -r _ _ uid gid _ home shell <<<"$line"
    [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/tether ] && [ "$shell" = /usr/sbin/nologin ] \
        && [ "$(getent group tether | cut -d: -f3)" = "$gid" ]
}
task_user_ok() {
    local line
    line="$(getent passwd tether-task)" || return 1
    IFS=: read -r _ _ uid gid _ _ shell <<<"$line"
    [ "$uid" -lt 1000 ] && [ "$shell" = /usr/sbin/nologin ] \
        && [ "$(getent group tether-task | cut -d: -f3)" = "$gid" ] \
        && ! id -nG tether-task | tr ' ' '\n' | grep -qx tether
}
owner() { stat -c '%U:%G %a' "$1"; }
check_installed() { # check_installed LABEL_PREFIX FILE...: each installed, unless dpkg skips it
    local prefix=$1 f
    shift
    for f in "$@"; do
        if dpkg_excludes "/$f"; then
            printf '  skip  /%s: dpkg on this machine is configured not to install it\n' "$f"
        else
            check "${prefix}/$f installed" test -f "/$f"
        fi
    done
}
# Whether dpkg skips a path here (minimal images drop /usr/share/man with path-exclude).
dpkg_excludes() {
    local rule
    for rule in $(sed -n 's/^path-exclude[= ]*//p' /etc/dpkg/dpkg.cfg.d/* 2>/dev/null); do
        # shellcheck disable=SC2053
        [[ "$1" == $rule ]] && return 0
    done
    return 1
}

dpkg -i "$deb" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -i failed"; }
installed=1
check "installed" bash -c "dpkg-query -W -f='\${Status}' tether-agent | grep -qx 'install ok installed'"
check "/usr/bin/tether-agent --version" /usr/bin/tether-agent --version
check "system user tether (uid < 1000, home /var/lib/tether, nologin, own group)" user_ok
check "task user tether-task (uid < 1000, nologin, own group, not in group tether)" task_user_ok
[ "$(owner /var/lib/tether)" = "tether:tether 751" ] && ok "/var/lib/tether tether:tether 0751" || bad "/var/lib/tether is $(owner /var/lib/tether)"
[ "$(owner /var/lib/tether/work)" = "tether-task:tether-task 750" ] && ok "/var/lib/tether/work tether-task:tether-task 0750" || bad "/var/lib/tether/work is $(owner /var/lib/tether/work)"
[ "$(owner /etc/tether/agent.toml)" = "root:tether 640" ] && ok "/etc/tether/agent.toml root:tether 0640" || bad "/etc/tether/agent.toml is $(owner /etc/tether/agent.toml)"
# The shipped config names no real board: whoever writes its config enables the service.
check "installed but not enabled" test ! -e /etc/systemd/system/multi-user.target.wants/tether-agent.service
check "dpkg knows the conffile" bash -c "dpkg-query -W -f='\${Conffiles}' tether-agent | grep -q '/etc/tether/agent.toml'"
check "the installed config passes check-config" /usr/bin/tether-agent check-config --config /etc/tether/agent.toml "${PROVISIONED[@]}"
check "the agent user can read its config" \
    bash -c "command -v runuser >/dev/null && runuser -u tether -- /usr/bin/tether-agent check-config --config /etc/tether/agent.toml ${PROVISIONED[*]}"
check_installed "" "${DOCS[@]}"
dpkg_excludes "/$BASH_COMPLETION" || check "the installed bash completion completes" bash_completes "/$BASH_COMPLETION"
verify_unit /usr/lib/systemd/system/tether-agent.service

# --- tetherctl: installed next to the agent, then purged ---
dpkg -i "$cli_deb" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -i tether-cli failed"; }
cli_installed=1
check "tether-cli: /usr/bin/tetherctl --version" /usr/bin/tetherctl --version
check_installed "tether-cli: " "${CLI_FILES[@]}"
dpkg_excludes "/$CLI_BASH" || check "tether-cli: the installed bash completion completes" cli_completes "/$CLI_BASH"
dpkg -P tether-cli >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -P tether-cli failed"; }
cli_installed=0
check "tether-cli: purged, no /usr/bin/tetherctl" test ! -e /usr/bin/tetherctl
check "tether-cli: purged, the agent still installed" /usr/bin/tether-agent --version

# --- upgrade: a newer version over a locally edited config and a journal ---
sed -i 's/^id = .*/id = "checked-board"/' /etc/tether/agent.toml
printf 'journal bytes\n' >/var/lib/tether/journal
chown tether:tether /var/lib/tether/journal
uid_before="$(id -u tether)"
newer="$WORK/newer"
mkdir -p "$newer"
CARGO_TARGET_DIR="$PI_TARGET_DIR" cargo deb -p tether-agent --target "$T" --no-build --no-strip \
    --multiarch none --deb-version "${version}+check1" -o "$newer/" >/dev/null 2>&1
dpkg -i "$newer"/*.deb >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "upgrade failed"; }
check "upgraded to ${version}+check1" bash -c "[ \"\$(dpkg-query -W -f='\${Version}' tether-agent)\" = '${version}+check1' ]"
check "the local config edit survives the upgrade" grep -qx 'id = "checked-board"' /etc/tether/agent.toml
check "the journal survives the upgrade" grep -qx 'journal bytes' /var/lib/tether/journal
check "the same user after the upgrade" test "$(id -u tether)" = "$uid_before"
[ "$(owner /etc/tether/agent.toml)" = "root:tether 640" ] && ok "config still root:tether 0640" || bad "config is $(owner /etc/tether/agent.toml) after upgrade"

# --- remove: the binary goes, config, state and user stay ---
dpkg -r tether-agent >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -r failed"; }
check "removed: status config-files" bash -c "dpkg-query -W -f='\${Status}' tether-agent | grep -qx 'deinstall ok config-files'"
check "removed: no /usr/bin/tether-agent" test ! -e /usr/bin/tether-agent
check "removed: no unit file" test ! -e /usr/lib/systemd/system/tether-agent.service
check "removed: no man page or completions" bash -c "! ls /$MAN /$BASH_COMPLETION 2>/dev/null"
check "removed: config kept" grep -qx 'id = "checked-board"' /etc/tether/agent.toml
check "removed: journal kept" test -f /var/lib/tether/journal
check "removed: user kept" getent passwd tether
check "removed: task user kept" getent passwd tether-task

# --- reinstall over the kept config ---
dpkg -i "$newer"/*.deb >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "reinstall failed"; }
check "reinstalled, the kept config in use" grep -qx 'id = "checked-board"' /etc/tether/agent.toml
check "reinstalled: the same user" test "$(id -u tether)" = "$uid_before"

# --- purge: everything goes ---
dpkg -P tether-agent >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -P failed"; }
installed=0
check "purged: unknown to dpkg" bash -c "! dpkg-query -W -f='\${Status}' tether-agent 2>/dev/null | grep -q ok"
check "purged: no /etc/tether" test ! -e /etc/tether
check "purged: no /var/lib/tether" test ! -e /var/lib/tether
check "purged: no user tether" bash -c "! getent passwd tether"
check "purged: no group tether" bash -c "! getent group tether"
check "purged: no user tether-task" bash -c "! getent passwd tether-task"
check "purged: no group tether-task" bash -c "! getent group tether-task"

# shellcheck source-path=SCRIPTDIR source=check-deb-master.sh
source "$(dirname "$0")/check-deb-master.sh"

printf '%d passed, %d failed\n' $((checks - failures)) "$failures"
[ "$failures" -eq 0 ]
