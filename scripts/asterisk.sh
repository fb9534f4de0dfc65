#!/usr/bin/env bash
# Finds the Asterisk the tests, the lab and the demo use, or builds one, and
# writes the path of its `asterisk` binary to the file named by $1.
#
# Order: $ASTERISK (a path to sbin/asterisk); an `asterisk` on PATH; else the
# source tarball $ASTERISK_TARBALL, checked against its sha256, built once
# into a cache outside the checkout keyed by that hash, so that any checkout
# on this machine reuses it. Nothing is downloaded.
set -euo pipefail

out=$(realpath -m "${1:?usage: scripts/asterisk.sh OUTFILE}")
here=$(cd "$(dirname "$0")/.." && pwd)
default_tarball="$here/../shared/vendor/asterisk-22.10.1.tar.gz"
default_sha=21203c1352060a5a7577844d7b5ca1e833593c531ddab4c1bd2107d39176618c
tarball=${ASTERISK_TARBALL:-$default_tarball}
cache_root=${ASTERISK_CACHE:-/var/cache/failover-bot}
jobs=${ASTERISK_JOBS:-$(nproc)}

found() {
	mkdir -p "$(dirname "$out")"
	printf '%s\n' "$1" >"$out.tmp" && mv "$out.tmp" "$out"
	echo "asterisk: $1 ($2)"
	exit 0
}

if [ -n "${ASTERISK:-}" ]; then
	[ -x "$ASTERISK" ] || { echo "asterisk: ASTERISK=$ASTERISK is not an executable" >&2; exit 1; }
	found "$ASTERISK" "from ASTERISK"
fi
if installed=$(command -v asterisk 2>/dev/null); then
	found "$installed" "installed"
fi

if [ ! -f "$tarball" ]; then
	echo "asterisk: no Asterisk found and no source at $tarball;" \
		"set ASTERISK=/path/to/sbin/asterisk or ASTERISK_TARBALL=/path/to/asterisk.tar.gz" >&2
	exit 1
fi
sha=$(sha256sum "$tarball" | cut -d' ' -f1)
want=${ASTERISK_TARBALL_SHA256:-}
if [ -z "$want" ] && [ "$(realpath "$tarball")" = "$(realpath -m "$default_tarball")" ]; then
	want=$default_sha
fi
if [ -z "$want" ]; then
	echo "asterisk: set ASTERISK_TARBALL_SHA256 to the expected sha256 of $tarball" >&2
	exit 1
fi
if [ "$sha" != "$want" ]; then
	echo "asterisk: $tarball has sha256 $sha, expected $want: refusing to build it" >&2
	exit 1
fi

# Only what the agent and its tests use: AMI and the HTTP server are in the
# core; ARI/Stasis, Local channels (core), bridging, the dialplan and the
# applications the test contexts call; chan_dahdi when its headers exist.
modules="app_dial app_echo app_playback app_stasis app_originate
	bridge_simple bridge_softmix bridge_holding bridge_builtin_features
	func_cdr func_channel func_callerid func_strings func_logic
	pbx_config chan_dahdi chan_bridge_media
	res_ari res_ari_model res_ari_applications res_ari_asterisk res_ari_bridges
	res_ari_channels res_ari_device_states res_ari_endpoints res_ari_events
	res_ari_playbacks res_ari_recordings res_ari_sounds res_ari_mailboxes
	res_stasis res_stasis_answer res_stasis_device_state res_stasis_playback
	res_stasis_recording res_stasis_snoop res_stasis_mailbox
	res_http_websocket res_sorcery_config res_sorcery_memory res_sorcery_astdb
	res_websocket_client res_mwi_external res_smdi res_stasis_broadcast
	res_timing_timerfd codec_ulaw codec_alaw format_wav format_pcm"
# A build made with another module list or flags is rebuilt, not reused.
recipe_rev=3 # bump when the configure flags or the menuselect steps change
recipe=$(printf '%s\n' "$recipe_rev" $modules | sha256sum | cut -c1-12)
prefix="$cache_root/asterisk-${sha:0:12}"
complete() { [ "$(cat "$prefix/.complete" 2>/dev/null)" = "$recipe" ]; }
if complete; then
	found "$prefix/sbin/asterisk" "cached build"
fi

mkdir -p "$cache_root"
# One build at a time per machine: a second checkout waits, then reuses it.
exec 9>"$cache_root/.asterisk-${sha:0:12}.lock"
flock 9
if complete; then
	found "$prefix/sbin/asterisk" "cached build"
fi

# Debian packages the build needs; only the missing ones are installed.
# dahdi-source and libtonezone-dev give chan_dahdi (DAHDIShowStatus).
need="build-essential pkg-config libedit-dev libjansson-dev libxml2-dev uuid-dev
	libsqlite3-dev libssl-dev bzip2"
optional="dahdi-source libtonezone-dev"
installed_ok() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
missing=""
for p in $need; do installed_ok "$p" || missing="$missing $p"; done
opt_missing=""
for p in $optional; do installed_ok "$p" || opt_missing="$opt_missing $p"; done
if [ -n "$missing$opt_missing" ]; then
	echo "asterisk: installing Debian build packages:$missing$opt_missing"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y -q --no-install-recommends $missing $opt_missing; then
		apt-get update -q
		apt-get install -y -q --no-install-recommends $missing
		apt-get install -y -q --no-install-recommends $opt_missing ||
			echo "asterisk: $opt_missing not available: building without chan_dahdi"
	fi
fi

start=$(date +%s)
work=$(mktemp -d "$cache_root/build-${sha:0:12}.XXXXXX")
trap 'rm -rf "$work"' EXIT
tar -xzf "$tarball" -C "$work"
src=$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'asterisk-*' | head -n1)

dahdi_flags=()
if [ -f /usr/src/dahdi.tar.bz2 ] && [ -f /usr/include/tonezone.h ]; then
	mkdir -p "$work/dahdi"
	tar -xjf /usr/src/dahdi.tar.bz2 -C "$work/dahdi" --wildcards '*/include/*'
	inc=$(dirname "$(dirname "$(find "$work/dahdi" -path '*/include/dahdi/user.h' | head -n1)")")
	dahdi_flags=(--with-dahdi="$(dirname "$inc")" --with-tonezone CPPFLAGS="-I$inc")
fi

cd "$src"
./configure -q --prefix="$prefix" --without-pjproject-bundled --without-pjproject \
	--with-jansson-bundled=no --disable-xmldoc "${dahdi_flags[@]}" >"$work/configure.log" 2>&1 ||
	{ tail -n 40 "$work/configure.log" >&2; exit 1; }

make -s menuselect.makeopts >"$work/menuselect.log" 2>&1
menuselect/menuselect --disable-all menuselect.makeopts >>"$work/menuselect.log"
# --disable-all also turns off the optional API, without which res_ari_events
# cannot resolve res_stasis_broadcast's functions (an AST_OPTIONAL_API).
menuselect/menuselect --enable OPTIONAL_API menuselect.makeopts >>"$work/menuselect.log"
for m in $modules; do
	menuselect/menuselect --enable "$m" menuselect.makeopts >>"$work/menuselect.log" 2>&1 || true
done

make -j"$jobs" >"$work/make.log" 2>&1 || { tail -n 60 "$work/make.log" >&2; exit 1; }
make install DESTDIR="$work/stage" >"$work/install.log" 2>&1 ||
	{ tail -n 40 "$work/install.log" >&2; exit 1; }
# Swap the new tree in whole: a running instance keeps its files.
rm -rf "$prefix.old"
[ -d "$prefix" ] && mv "$prefix" "$prefix.old"
mv "$work/stage$prefix" "$prefix"
rm -rf "$prefix.old"
echo "built in $(($(date +%s) - start)) s on $(nproc) cores, $(ls "$prefix/lib/asterisk/modules" | wc -l) modules" >"$prefix/BUILD-INFO"
echo "$recipe" >"$prefix/.complete"
echo "asterisk: $(cat "$prefix/BUILD-INFO")"
found "$prefix/sbin/asterisk" "built from $tarball"
