"""One real Asterisk per lab node: its own directories, ports and ``entityid``.

``python -m bot.lab.asterisk init|start|stop|kill|status --dir DIR`` are the
commands a lab node's ``[asterisk]`` section names, as a production node names
``systemctl start asterisk``. ``init`` writes the configuration (never
``make samples``): every ``deploy/asterisk/*.conf`` file as shipped, then what
the lab adds (its AMI and HTTP ports, the AMI secret, an ARI user, the lab's
dialplan). ``start`` returns once Asterisk runs, in the foreground of its own
session as under systemd (the bot then waits for ``FullyBooted`` over AMI); ``stop`` is ``core stop
gracefully``, then ``core stop now`` after ``--graceful`` seconds; ``kill`` is
SIGKILL; ``status`` exits 0 while the process runs and 3 otherwise, as
``systemctl is-active`` does.

Which Asterisk: ``$ASTERISK``, else the path ``make asterisk`` wrote to
``.deps/asterisk.path``, else an ``asterisk`` on PATH.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "asterisk"
PATH_FILE = ROOT / ".deps" / "asterisk.path"
HOW_TO_GET = (
    "no Asterisk found: run `make asterisk` (builds ../shared/vendor/asterisk-22.10.1.tar.gz "
    "once into /var/cache/failover-bot) or set ASTERISK=/path/to/sbin/asterisk"
)
EXIT_NOT_RUNNING = 3
STOP_NOW_WAIT = 25.0  # `core stop now` waits up to 15 s + 1 s for channels to go
KILL_WAIT = 5.0
CONSOLE_TIMEOUT = 2.0  # a console that does not answer within this is a hung Asterisk

# Modules the lab loads when they exist: AMI and HTTP are in the core; the rest
# is what the bot, its test calls and ARI use. Nothing that binds a SIP port,
# so two instances run side by side.
MODULES = (
    "pbx_config.so",
    "app_dial.so",
    "app_echo.so",
    "app_playback.so",
    "app_stasis.so",
    "app_originate.so",
    "bridge_simple.so",
    "bridge_softmix.so",
    "bridge_holding.so",
    "bridge_builtin_features.so",
    "func_cdr.so",
    "func_channel.so",
    "func_callerid.so",
    "func_strings.so",
    "func_logic.so",
    "chan_dahdi.so",
    "chan_bridge_media.so",
    "codec_ulaw.so",
    "codec_alaw.so",
    "format_wav.so",
    "format_pcm.so",
    "res_timing_timerfd.so",
    "res_sorcery_config.so",
    "res_sorcery_memory.so",
    "res_sorcery_astdb.so",
    "res_http_websocket.so",
    "res_websocket_client.so",
    "res_mwi_external.so",
    "res_smdi.so",
    "res_stasis_broadcast.so",
    "res_stasis.so",
    "res_stasis_answer.so",
    "res_stasis_device_state.so",
    "res_stasis_playback.so",
    "res_stasis_recording.so",
    "res_stasis_snoop.so",
    "res_stasis_mailbox.so",
    "res_ari.so",
    "res_ari_model.so",
    "res_ari_applications.so",
    "res_ari_asterisk.so",
    "res_ari_bridges.so",
    "res_ari_channels.so",
    "res_ari_device_states.so",
    "res_ari_endpoints.so",
    "res_ari_events.so",
    "res_ari_mailboxes.so",
    "res_ari_playbacks.so",
    "res_ari_recordings.so",
    "res_ari_sounds.so",
)

# The lab's own dialplan next to deploy/asterisk/extensions_failover.conf: call
# outcomes for the tests and a long call for the drain scenarios.
LAB_DIALPLAN = """\
; Written by bot.lab.asterisk for the lab; not for production.
[lab]
exten => busy,1,Busy(5)
exten => congestion,1,Congestion(5)
; Rings (never answers) until the originate times out.
exten => noanswer,1,Ringing()
 same => n,Wait(60)
; Answers and stays up: a call the drain has to wait for.
exten => hold,1,Set(CDR_PROP(disable)=1)
 same => n,Answer()
 same => n,Wait(${IF($["${HOLD}" = ""]?600:${HOLD})})
 same => n,Hangup()
exten => echo,1,Answer()
 same => n,Echo()
exten => stasis,1,Answer()
 same => n,Stasis(${ARIAPP})
"""


def find_binary() -> str | None:
    """The Asterisk binary to use, or None (see the module docstring)."""
    env = os.environ.get("ASTERISK")
    if env:
        return env if os.access(env, os.X_OK) else None
    with contextlib.suppress(OSError):
        path = PATH_FILE.read_text().strip()
        if path and os.access(path, os.X_OK):
            return path
    return shutil.which("asterisk")


def module_dir(binary: str) -> Path:
    """Where the binary's modules are: PREFIX/lib/asterisk/modules or a distribution's."""
    prefix = Path(binary).resolve().parent.parent
    candidates = [
        prefix / "lib" / "asterisk" / "modules",
        prefix / "lib64" / "asterisk" / "modules",
        *sorted((prefix / "lib").glob("*-linux-gnu/asterisk/modules")),
    ]
    for c in candidates:
        if c.is_dir():
            return c
    raise FileNotFoundError(f"no Asterisk modules directory next to {binary}")


@dataclass
class Runtime:
    """One Asterisk instance's files under ``dir``."""

    dir: Path
    binary: str
    ami_port: int
    http_port: int
    entityid: str = "02:00:00:00:00:01"
    ami_user: str = "failover"
    ami_secret: str = "lab-secret"
    ari_user: str = "failover"
    ari_password: str = "lab-ari-password"
    extra_users: dict[str, dict[str, str]] = field(default_factory=dict)
    deploy_dir: Path = DEPLOY
    # The node's network namespace, where a companion answers TCP on the floating
    # address while this Asterisk serves (bot.lab.sipanswer); None: no companion.
    sip_netns: str | None = None

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    @property
    def conf(self) -> Path:
        return self.etc / "asterisk.conf"

    @property
    def pidfile(self) -> Path:
        return self.dir / "run" / "asterisk.pid"

    @property
    def log(self) -> Path:
        return self.dir / "log" / "messages"

    @property
    def ari_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/ari"

    def save(self) -> None:
        data = asdict(self)
        data.update(dir=str(self.dir), deploy_dir=str(self.deploy_dir))
        path = self.dir / "runtime.json"
        path.write_text(json.dumps(data, indent=1))
        path.chmod(0o600)  # it holds the lab's AMI secret

    @classmethod
    def load(cls, directory: Path) -> Runtime:
        data = json.loads((directory / "runtime.json").read_text())
        data.update(dir=Path(data["dir"]), deploy_dir=Path(data["deploy_dir"]))
        return cls(**data)

    # ------------------------------------------------------------------ files

    def write(self) -> None:
        for sub in ("etc", "run", "log", "lib", "spool", "keys"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        mods = module_dir(self.binary)
        d = self.dir
        self._put(
            "asterisk.conf",
            f"""[directories]
astetcdir => {self.etc}
astmoddir => {mods}
astvarlibdir => {d}/lib
astdbdir => {d}/lib
astkeydir => {d}/keys
astdatadir => {d}/lib
astagidir => {d}/lib/agi-bin
astspooldir => {d}/spool
astrundir => {d}/run
astlogdir => {d}/log
astsbindir => {Path(self.binary).parent}

[options]
entityid = {self.entityid}
verbose = 0
debug = 0
""",
        )
        # The project's files as shipped; the lab adds to them below and moves only the
        # one path outside /etc/asterisk (chan_dahdi's channel list) into its directory.
        for src in sorted(self.deploy_dir.glob("*.conf")):
            shutil.copyfile(src, self.etc / src.name)
        present = {m for m in MODULES if (mods / m).exists()}
        loads = "\n".join(f"load => {m}" for m in sorted(present))
        self._put("modules.conf", f"[modules]\nautoload = no\n{loads}\n")
        self._put(
            "logger.conf",
            "[general]\n[logfiles]\nmessages => notice,warning,error,verbose(3)\n",
        )
        self._extend(
            "manager.conf",
            "general",
            f"enabled = yes\nport = {self.ami_port}\nbindaddr = 127.0.0.1\n",
        )
        self._put(f"manager_{self.ami_user}_secret.conf", f"secret = {self.ami_secret}\n")
        users = "".join(
            f"\n[{name}]\n" + "".join(f"{k} = {v}\n" for k, v in rights.items())
            for name, rights in self.extra_users.items()
        )
        if users:
            with (self.etc / "manager.conf").open("a") as fh:
                fh.write(users)
        self._extend(
            "http.conf",
            "general",
            f"enabled = yes\nbindaddr = 127.0.0.1\nbindport = {self.http_port}\n",
        )
        self._extend("ari.conf", "general", "enabled = yes\n")
        ari = (self.etc / "ari.conf").read_text()
        # The shipped ari.conf includes its user's password from a file of its own.
        for included in re.findall(r'#include "(ari_[\w-]+_secret\.conf)"', ari):
            self._put(included, f"password = {self.ari_password}\n")
        if f"[{self.ari_user}]" not in ari:
            with (self.etc / "ari.conf").open("a") as fh:
                fh.write(
                    f"\n[{self.ari_user}]\ntype = user\nread_only = no\n"
                    f"password = {self.ari_password}\n"
                )
        # Core files Asterisk reads at start; their defaults are what the lab wants.
        for name in (
            "cdr.conf",
            "cel.conf",
            "features.conf",
            "acl.conf",
            "udptl.conf",
            "ccss.conf",
            "websocket_client.conf",
        ):
            if not (self.etc / name).exists():
                self._put(name, "; the defaults\n")
        # chan_dahdi.conf includes the spans dahdi_genconf writes on each node, from
        # outside the replicated /etc/asterisk: the lab's own (empty) list instead.
        if not (self.etc / "dahdi-channels.conf").exists():
            self._put("dahdi-channels.conf", "; no DAHDI hardware in the lab\n")
        dahdi = self.etc / "chan_dahdi.conf"
        if dahdi.exists():
            dahdi.write_text(
                dahdi.read_text().replace(
                    '#include "/etc/dahdi/dahdi-channels.conf"',
                    f'#include "{self.etc / "dahdi-channels.conf"}"',
                )
            )
        self._put("extensions_lab.conf", LAB_DIALPLAN)
        self._put(
            "extensions.conf",
            '[general]\nstatic = yes\nwriteprotect = yes\n\n#include "extensions_failover.conf"\n'
            '#include "extensions_lab.conf"\n',
        )
        self.save()

    def _put(self, name: str, text: str) -> None:
        path = self.etc / name
        path.write_text(text)
        if "secret" in name:
            path.chmod(0o600)

    def _extend(self, name: str, section: str, body: str) -> None:
        """Append the lab's settings to a section of a shipped file (Asterisk's ``(+)``)."""
        path = self.etc / name
        text = path.read_text() if path.exists() else ""
        has = re.search(rf"^\[{re.escape(section)}\]", text, re.MULTILINE) is not None
        header = f"[{section}](+)" if has else f"[{section}]"
        path.write_text(text + f"\n; added for the lab\n{header}\n{body}")

    # ------------------------------------------------------------------ process

    def pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def start(self) -> int:
        if self.pid() is not None:
            return 0
        self.pidfile.unlink(missing_ok=True)
        # In the foreground (-f) of its own session, as systemd runs it in production:
        # `core restart now` then re-executes in the same process, as there.
        with (self.dir / "log" / "console.log").open("ab") as out:
            proc = subprocess.Popen(
                [self.binary, "-f", "-C", str(self.conf)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        _wait(lambda: self.pid() == proc.pid or proc.poll() is not None, 10)
        if self.pid() != proc.pid:
            print(f"asterisk did not start (exit {proc.poll()}): see {out.name}", file=sys.stderr)
            return 1
        self.note(f"pid {proc.pid}: started")
        if self.sip_netns is not None:
            with (self.dir / "log" / "sipanswer.log").open("ab") as out:
                subprocess.Popen(
                    [sys.executable, "-m", "bot.lab.sipanswer", "--netns", self.sip_netns,
                     "--pid", str(proc.pid), "--ready-port", str(self.http_port)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True,
                )  # fmt: skip
        return 0

    def cli(self, command: str, timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, "-C", str(self.conf), "-rx", command],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    @property
    def command_log(self) -> Path:
        return self.dir / "log" / "commands.log"

    def note(self, text: str) -> None:
        """What the lab commands did, for the operator and the tests."""
        with self.command_log.open("a") as fh:
            fh.write(f"{time.time():.3f} {text}\n")

    def stop(self, graceful: float) -> int:
        """``core stop gracefully`` for ``graceful`` seconds, then ``core stop now``."""
        pid = self.pid()
        if pid is None:
            return 0
        try:
            self.cli("core show uptime", timeout=CONSOLE_TIMEOUT)
        except subprocess.TimeoutExpired:
            # A hung Asterisk (SIGSTOP, deadlock) never acts on `core stop`: kill it
            # now, as systemd does after TimeoutStopSec, rather than waiting for nothing.
            self.note(f"pid {pid}: console silent for {CONSOLE_TIMEOUT:g} s: SIGKILL")
            print(f"asterisk {pid} does not answer its console: killed", file=sys.stderr)
            return self.kill()
        if graceful > 0:
            # The console returns at once; Asterisk waits for the calls to end.
            self.note(f"pid {pid}: core stop gracefully")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli("core stop gracefully", timeout=5)
            if _wait(lambda: not _alive(pid), graceful):
                self.note(f"pid {pid}: stopped gracefully")
                return 0
            print(f"calls still up after {graceful:g} s: core stop now", file=sys.stderr)
        self.note(f"pid {pid}: core stop now")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.cli("core stop now", timeout=5)
        if _wait(lambda: not _alive(pid), STOP_NOW_WAIT):
            self.note(f"pid {pid}: stopped")
            return 0
        print(
            f"asterisk {pid} still running {STOP_NOW_WAIT:g} s after core stop now", file=sys.stderr
        )
        return 1

    def kill(self) -> int:
        pid = self.pid()
        if pid is None:
            return 0
        self.note(f"pid {pid}: SIGKILL")
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return 0 if _wait(lambda: not _alive(pid), KILL_WAIT) else 1

    def status(self) -> int:
        pid = self.pid()
        if pid is None:
            print("not running")
            return EXIT_NOT_RUNNING
        print(f"running (pid {pid})")
        return 0


def _alive(pid: int) -> bool:
    """Running and an Asterisk (a zombie or a reused pid does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[0]
    return state not in ("Z", "X") and Path(exe).name.startswith("asterisk")


def _wait(predicate: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bot.lab.asterisk", description=__doc__)
    sub = p.add_subparsers(dest="verb", required=True)
    init = sub.add_parser("init", help="write the configuration under --dir")
    for q in (init, *(sub.add_parser(v) for v in ("start", "stop", "kill", "status"))):
        q.add_argument("--dir", required=True, type=Path, help="the instance's directory")
        if q.prog.endswith("stop"):
            q.add_argument(
                "--graceful",
                type=float,
                default=0.0,
                metavar="S",
                help="core stop gracefully, then core stop now after S seconds (0: now)",
            )
    init.add_argument("--ami-port", type=int, required=True)
    init.add_argument("--http-port", type=int, required=True)
    init.add_argument("--entityid", default="02:00:00:00:00:01")
    init.add_argument("--ami-user", default="failover")
    init.add_argument("--ami-secret-file", type=Path, required=True)
    init.add_argument("--ari-password-file", type=Path)
    init.add_argument("--binary", help="the asterisk binary (default: found as documented)")
    args = p.parse_args(argv)
    if args.verb == "init":
        binary = args.binary or find_binary()
        if binary is None:
            print(HOW_TO_GET, file=sys.stderr)
            return 2
        rt = Runtime(
            args.dir,
            binary,
            args.ami_port,
            args.http_port,
            entityid=args.entityid,
            ami_user=args.ami_user,
            ami_secret=args.ami_secret_file.read_text().strip(),
        )
        if args.ari_password_file:
            rt.ari_password = args.ari_password_file.read_text().strip()
        args.dir.mkdir(parents=True, exist_ok=True)
        rt.write()
        return 0
    rt = Runtime.load(args.dir)
    if args.verb == "start":
        return rt.start()
    if args.verb == "stop":
        return rt.stop(args.graceful)
    if args.verb == "kill":
        return rt.kill()
    return rt.status()


if __name__ == "__main__":
    sys.exit(main())
