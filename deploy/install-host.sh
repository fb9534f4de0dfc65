#!/bin/sh
# Install failover-bot on a Debian 12 PBX server: `make install-host` runs this as root.
#
#   PREFIX      the virtualenv (default /opt/failover-bot)
#   WHEELHOUSE  directory of wheels made by `make wheelhouse` (the bot and every
#               dependency): the server needs no access to a package index
#   BINDIR      where the `failover-bot` command is linked (default /usr/local/bin)
#   DOCDIR      the guide and the deploy files (default /usr/share/doc/failover-bot)
#   UNITDIR     systemd units (default /etc/systemd/system); UNITDIR=none: skip
#   CONFDIR     the configuration directory (default /etc/failover-bot)
#
# Idempotent: run it again with a newer wheelhouse to upgrade (deploy/README.md,
# "Upgrade and rollback": each version in PREFIX.d/, PREFIX and PREFIX.previous
# link to the current and the previous one).
set -eu

PREFIX=${PREFIX:-/opt/failover-bot}
BINDIR=${BINDIR:-/usr/local/bin}
DOCDIR=${DOCDIR:-/usr/share/doc/failover-bot}
UNITDIR=${UNITDIR:-/etc/systemd/system}
CONFDIR=${CONFDIR:-/etc/failover-bot}
SRC=$(cd "$(dirname "$0")/.." && pwd)
WHEELHOUSE=${WHEELHOUSE:-$SRC/dist/wheelhouse}
PYTHON=${PYTHON:-/usr/bin/python3}

die() { echo "install-host: $*" >&2; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root"
[ -d "$WHEELHOUSE" ] || die "no wheelhouse at $WHEELHOUSE: run 'make wheelhouse' first"
"$PYTHON" -c 'import sys, venv, ensurepip; assert sys.version_info >= (3, 11)' 2>/dev/null \
    || die "$PYTHON needs Python 3.11 or later with venv and ensurepip: apt-get install python3-venv"

# The operators' group: members run status, events, switchover, pause... without
# root (they read the API token and the Redis passwords, root:failover 0640).
# The bot itself runs as root: it mounts, adds addresses and manages Asterisk.
if ! getent group failover >/dev/null; then
    groupadd --system failover
fi
if ! getent passwd failover >/dev/null; then
    useradd --system --gid failover --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin --comment "failover-bot operators" failover
fi

# Each version gets a virtualenv of its own, PREFIX.d/VERSION-STAMP, and PREFIX is a
# symbolic link to the current one. A running bot keeps importing from its own
# directory (its interpreter's path is the real one, written by pip into the
# command's first line): nothing it has open or will import is renamed or replaced
# under it until it is restarted. The previous version stays as PREFIX.previous
# (rollback, deploy/README.md "Upgrade and rollback").
RELEASES="$PREFIX.d"
STAMP=$(date +%Y%m%d%H%M%S)
# A venv cannot be moved after pip wrote its paths: NEW is the release's final name.
NEW="$RELEASES/$STAMP-$$"
install -d "$RELEASES"
if ! { "$PYTHON" -m venv "$NEW" &&
       "$NEW/bin/pip" install --quiet --no-index --find-links "$WHEELHOUSE" failover-bot &&
       VERSION=$("$NEW/bin/failover-bot" --version); }; then
    rm -rf "$NEW"
    die "the new version did not install; $PREFIX is unchanged"
fi
if [ -d "$PREFIX" ] && [ ! -L "$PREFIX" ]; then
    # A virtualenv of an older install-host, in place: becomes a release itself (the
    # last rename of a running bot's directory: restart it after this install).
    mv "$PREFIX" "$RELEASES/legacy-$STAMP"
    ln -sfn "$RELEASES/legacy-$STAMP" "$PREFIX"
    echo "install-host: $PREFIX was a directory, now $RELEASES/legacy-$STAMP: restart failover-bot" >&2
fi
PREVIOUS=$(readlink "$PREFIX" 2>/dev/null || true)
ln -sfn "$NEW" "$PREFIX.tmp" && mv -T "$PREFIX.tmp" "$PREFIX"
if [ -n "$PREVIOUS" ] && [ "$PREVIOUS" != "$NEW" ]; then
    ln -sfn "$PREVIOUS" "$PREFIX.previous.tmp" && mv -T "$PREFIX.previous.tmp" "$PREFIX.previous"
fi
# Older releases go, unless a running process still uses one.
KEEP_PREVIOUS=$(readlink "$PREFIX.previous" 2>/dev/null || true)
for release in "$RELEASES"/*; do
    [ -d "$release" ] || continue
    [ "$release" = "$NEW" ] || [ "$release" = "$KEEP_PREVIOUS" ] && continue
    if grep -qsF "$release/" /proc/[0-9]*/cmdline 2>/dev/null; then continue; fi
    rm -rf "$release"
done
echo "$VERSION in $NEW"

install -d "$BINDIR"
ln -sfn "$PREFIX/bin/failover-bot" "$BINDIR/failover-bot"

# The guide and every file it names, where the unit's Documentation= points.
install -d "$DOCDIR"
cp -R "$SRC/deploy" "$DOCDIR/"
# The dashboard the guide's "Monitoring" imports into Grafana.
if [ -d "$SRC/grafana" ]; then cp -R "$SRC/grafana" "$DOCDIR/"; fi
install -m 0644 "$SRC/README.md" "$DOCDIR/README.md"

install -d -m 0750 -g failover "$CONFDIR"

if [ "$UNITDIR" != none ]; then
    install -d "$UNITDIR" "$UNITDIR/asterisk.service.d"
    install -m 0644 "$SRC/deploy/systemd/failover-bot.service" "$UNITDIR/failover-bot.service"
    install -m 0644 "$SRC/deploy/systemd/asterisk.service.d/failover-bot.conf" \
        "$UNITDIR/asterisk.service.d/failover-bot.conf"
    if [ -f "$SRC/deploy/drbd/failover-bot-drbd@.service" ]; then
        install -m 0644 "$SRC/deploy/drbd/failover-bot-drbd@.service" "$UNITDIR/"
    fi
    if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
        systemctl daemon-reload
    fi
fi
echo "installed failover-bot in $PREFIX ($BINDIR/failover-bot)"
