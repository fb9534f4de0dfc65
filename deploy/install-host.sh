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
# "Upgrade and rollback": the previous virtualenv is kept as PREFIX.previous).
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

# The old virtualenv is kept as PREFIX.previous (rollback) and put back if the
# new one does not install or run.
if [ -d "$PREFIX" ]; then
    rm -rf "$PREFIX.previous"
    mv "$PREFIX" "$PREFIX.previous"
fi
if ! { "$PYTHON" -m venv "$PREFIX" &&
       "$PREFIX/bin/pip" install --quiet --no-index --find-links "$WHEELHOUSE" failover-bot &&
       "$PREFIX/bin/failover-bot" --version; }; then
    rm -rf "$PREFIX"
    if [ -d "$PREFIX.previous" ]; then mv "$PREFIX.previous" "$PREFIX"; fi
    die "the new version did not install; $PREFIX is unchanged"
fi

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
