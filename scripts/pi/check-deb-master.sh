# shellcheck shell=bash
# check-deb.sh's install part for tether-master, sourced after the agent's purge (its helpers:
# ok, bad, check, owner, verify_unit, dpkg_excludes; $master_deb, $WORK, $T): install, the
# unit verified, an upgrade to a version-bumped copy over an edited config and a store,
# remove (config, store and user kept), purge (all gone).

master_user_ok() {
    local line
    line="$(getent passwd tether-master)" || return 1
    IFS=: read -r _ _ uid gid _ home shell <<<"$line"
    [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/tether-master ] && [ "$shell" = /usr/sbin/nologin ] \
        && [ "$(getent group tether-master | cut -d: -f3)" = "$gid" ]
}

master_version="$(dpkg-deb -f "$master_deb" Version)"
dpkg -i "$master_deb" >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -i tether-master failed"; }
master_installed=1
check "tether-master: installed" bash -c "dpkg-query -W -f='\${Status}' tether-master | grep -qx 'install ok installed'"
check "tether-master: /usr/bin/tether-master --version" /usr/bin/tether-master --version
check "tether-master: system user (uid < 1000, home /var/lib/tether-master, nologin, own group)" master_user_ok
[ "$(owner /var/lib/tether-master)" = "tether-master:tether-master 750" ] && ok "tether-master: /var/lib/tether-master 0750" || bad "tether-master: /var/lib/tether-master is $(owner /var/lib/tether-master)"
[ "$(owner /etc/tether/master.toml)" = "root:tether-master 640" ] && ok "tether-master: /etc/tether/master.toml root:tether-master 0640" || bad "tether-master: /etc/tether/master.toml is $(owner /etc/tether/master.toml)"
check "tether-master: installed but not enabled" test ! -e /etc/systemd/system/multi-user.target.wants/tether-master.service
check "tether-master: dpkg knows the conffile" bash -c "dpkg-query -W -f='\${Conffiles}' tether-master | grep -q '/etc/tether/master.toml'"
check "tether-master: the master user passes check-config on the installed config" \
    bash -c "command -v runuser >/dev/null && runuser -u tether-master -- /usr/bin/tether-master check-config"
# What the unit runs, as the unit runs it: the user, the config, ready on the configured
# addresses (other ports, in case this machine uses 1883 or 8080), the admin token written.
if command -v setpriv >/dev/null; then
    # setpriv execs (no child), so the pid is the master's own.
    (cd / && exec setpriv --reuid=tether-master --regid=tether-master --clear-groups \
        /usr/bin/tether-master run --listen 127.0.0.1:0 --http 127.0.0.1:0) \
        >"$WORK/master.out" 2>"$WORK/master.err" &
    master_pid=$!
    for _ in $(seq 200); do
        grep -q '^tether-master ready ' "$WORK/master.out" && break
        kill -0 "$master_pid" 2>/dev/null || break
        sleep 0.1
    done
    if grep -q '^tether-master ready ' "$WORK/master.out"; then
        ok "tether-master: runs as its user with the installed config"
    else
        bad "tether-master: no ready line as its user: $(cat "$WORK/master.err")"
    fi
    kill "$master_pid" 2>/dev/null || true
    wait "$master_pid" 2>/dev/null || true
    check "tether-master: the first admin token is in /var/lib/tether-master, 0600" \
        bash -c "[ \"\$(stat -c '%U %a' /var/lib/tether-master/admin.token)\" = 'tether-master 600' ]"
else
    printf '  skip  running the master as its user: setpriv is not installed\n'
fi
verify_unit /usr/lib/systemd/system/tether-master.service

# --- upgrade: a newer version over an edited config and the store ---
sed -i 's/^prefix = .*/prefix = "checked"/' /etc/tether/master.toml
printf 'store bytes\n' >/var/lib/tether-master/kept
master_uid="$(id -u tether-master)"
master_newer="$WORK/master-newer"
mkdir -p "$master_newer"
CARGO_TARGET_DIR="$PI_TARGET_DIR" cargo deb -p tether-master --target "$T" --no-build --no-strip \
    --multiarch none --deb-version "${master_version}+check1" -o "$master_newer/" >/dev/null 2>&1
dpkg -i "$master_newer"/*.deb >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "tether-master upgrade failed"; }
check "tether-master: upgraded to ${master_version}+check1" \
    bash -c "[ \"\$(dpkg-query -W -f='\${Version}' tether-master)\" = '${master_version}+check1' ]"
check "tether-master: the config edit survives the upgrade" grep -qx 'prefix = "checked"' /etc/tether/master.toml
check "tether-master: the state survives the upgrade" grep -qx 'store bytes' /var/lib/tether-master/kept
check "tether-master: the same user after the upgrade" test "$(id -u tether-master)" = "$master_uid"
[ "$(owner /etc/tether/master.toml)" = "root:tether-master 640" ] && ok "tether-master: config still root:tether-master 0640" || bad "tether-master: config is $(owner /etc/tether/master.toml) after upgrade"

# --- remove: the binary and unit go, config, state and user stay ---
dpkg -r tether-master >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -r tether-master failed"; }
check "tether-master: removed, status config-files" bash -c "dpkg-query -W -f='\${Status}' tether-master | grep -qx 'deinstall ok config-files'"
check "tether-master: removed, no binary" test ! -e /usr/bin/tether-master
check "tether-master: removed, no unit file" test ! -e /usr/lib/systemd/system/tether-master.service
check "tether-master: removed, config kept" grep -qx 'prefix = "checked"' /etc/tether/master.toml
check "tether-master: removed, state kept" test -f /var/lib/tether-master/kept
check "tether-master: removed, user kept" getent passwd tether-master

# --- purge: everything goes ---
dpkg -P tether-master >"$WORK/dpkg.log" 2>&1 || { cat "$WORK/dpkg.log"; pi_die "dpkg -P tether-master failed"; }
master_installed=0
check "tether-master: purged, unknown to dpkg" bash -c "! dpkg-query -W -f='\${Status}' tether-master 2>/dev/null | grep -q ok"
check "tether-master: purged, no /etc/tether/master.toml" test ! -e /etc/tether/master.toml
check "tether-master: purged, no /var/lib/tether-master" test ! -e /var/lib/tether-master
check "tether-master: purged, no user" bash -c "! getent passwd tether-master"
check "tether-master: purged, no group" bash -c "! getent group tether-master"
