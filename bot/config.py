"""Node configuration: one TOML file -> frozen dataclasses.

The schema is the dataclasses below. Each field carries its documentation and,
where plain Python types are not enough, a *kind* (duration, secret, address,
...). One generic walker converts and validates the whole file and collects
every problem as ``key: reason`` instead of stopping at the first, so that
``check-config`` can list them all at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import ipaddress
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

DEFAULT_CONFIG_PATH = "/etc/failover-bot/node.toml"


class ConfigError(Exception):
    """The configuration could not be used; ``problems`` lists every reason."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{key}: {reason}" for key, reason in problems))

    def lines(self) -> list[str]:
        return [f"{key}: {reason}" if key else reason for key, reason in self.problems]


class Secret:
    """A secret read from a file or an environment variable.

    Its value is reachable only through ``reveal()``; ``str``/``repr`` never show it,
    so a secret that ends up in a log line, an exception or a status object shows
    as ``***`` (with its source, which is not secret).

    A *deferred* secret (``Secret.deferred``) is read at its first ``reveal()``: a
    verb that does not need it never opens its file, so an operator without read
    access to it can still run that verb. An unreadable deferred secret raises
    ``ConfigError`` naming its key.
    """

    __slots__ = ("_base", "_key", "_value", "source")

    def __init__(self, value: str, source: str) -> None:
        self._value: str | None = value
        self.source = source
        self._key = ""
        self._base = Path(".")

    @classmethod
    def deferred(cls, source: str, base_dir: Path, key: str) -> Secret:
        secret = cls("", source)
        secret._value = None
        secret._key = key
        secret._base = base_dir
        return secret

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def reveal(self) -> str:
        if self._value is None:
            try:
                self._value = read_secret(self.source, self._base).reveal()
            except ValueError as exc:
                raise ConfigError([(self._key, str(exc))]) from None
        return self._value

    def __repr__(self) -> str:
        return f"Secret({self.source}, ***)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        # The same source (and, once both are read, the same value); the hash is the
        # source's, so it never changes when a deferred secret is read.
        if not isinstance(other, Secret) or other.source != self.source:
            return False
        if self.loaded and other.loaded:
            return other._value == self._value
        return self._base == other._base

    def __hash__(self) -> int:
        return hash(self.source)


def _doc(doc: str, kind: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"doc": doc}
    if kind:
        meta["kind"] = kind
    meta.update(extra)
    return meta


def opt(default: Any, doc: str, kind: str | None = None, **extra: Any) -> Any:
    """A field with a default."""
    if isinstance(default, (list, dict)):
        return field(
            default_factory=lambda d=default: type(d)(d),  # type: ignore[misc]
            metadata=_doc(doc, kind, **extra),
        )
    return field(default=default, metadata=_doc(doc, kind, **extra))


def req(doc: str, kind: str | None = None, **extra: Any) -> Any:
    """A required field (no default)."""
    return field(metadata=_doc(doc, kind, required=True, **extra))


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class NodeConfig:
    id: str = req("This node's id, unique in the cluster (letters, digits, '-', '_').", "ident")
    rseries_host: Literal["A", "B"] | None = opt(
        None, 'The R-Series host port this server is cabled to: "A" or "B".'
    )
    state_dir: str = opt(
        "/var/lib/failover-bot",
        "Directory for the node's durable state: highest epoch seen, promises, pause.",
    )


@dataclass(frozen=True)
class PeerConfig:
    id: str = req("The peer's node id.", "ident")
    api: str = req('The peer bot\'s API base URL, e.g. "http://10.0.0.2:9440".', "http_url")


@dataclass(frozen=True)
class ClusterConfig:
    name: str = req("Cluster name; keys on Redis are failover:{NAME}:*.", "ident")
    peers: list[PeerConfig] = opt([], "The other node(s): tables with id and api.")
    secret_file: Secret | None = opt(
        None, "Shared secret for the peer channel's HMAC (a file, or env:NAME).", "secret"
    )
    lease_ttl: float = opt(3.0, "Leader lease time to live.", "duration")
    renew_interval: float = opt(1.0, "How often the holder renews the lease.", "duration")
    drift_margin: float = opt(
        0.1, "Subtracted from the lease validity to cover clock-rate drift.", "duration"
    )
    fence_budget: float = opt(
        0.5, "Self-fencing starts this long before the lease runs out.", "duration"
    )
    fence_command: list[str] = opt(
        [],
        "Optional argv run after taking a lease its holder never released, before "
        "promoting (e.g. fence_ipmilan against the peer's BMC); {peer} is the peer id.",
        "argv",
    )
    preferred_primary: str | None = opt(
        None, "Node that should be primary when healthy (failback); unset: no failback.", "ident"
    )
    failback_delay: float = opt(
        300.0, "How long the preferred node must be healthy and ready before failback.", "duration"
    )
    failback_idle_only: bool = opt(
        True, "Fail back only while no calls are up on the current primary."
    )
    failover_holddown: float = opt(
        120.0, "After a health-triggered failover, no other one for this long.", "duration"
    )
    failed_holddown: float = opt(
        600.0, "A node whose takeover failed is not eligible for this long.", "duration"
    )
    stop_drain_timeout: float = opt(
        30.0,
        "A stop of the primary's bot (SIGTERM) hands over to a ready standby, waiting this "
        "long for calls to end; without a ready standby it fences.",
        "duration",
    )


@dataclass(frozen=True)
class RedisConfig:
    url: str = opt(
        "redis://127.0.0.1:6379/0",
        "Redis URL (redis:// or rediss:// for TLS). Ignored for the host when sentinels are set.",
        "redis_url",
    )
    sentinels: list[str] = opt(
        [], 'Sentinel addresses "host:port"; empty: no Sentinel.', "hostports"
    )
    service_name: str = opt("failover-bot", "The Sentinel service (master) name.")
    username: str | None = opt(None, "ACL user name, if any.")
    password_file: Secret | None = opt(None, "Redis password (a file, or env:NAME).", "secret")
    sentinel_password_file: Secret | None = opt(
        None, "The sentinels' own password, their requirepass (a file, or env:NAME).", "secret"
    )
    timeout: float = opt(0.5, "Timeout of every Redis command.", "duration")
    tls_ca_file: str | None = opt(
        None,
        "CA bundle for rediss:// (default: system CAs); env:NAME: the PEM text itself.",
        "ca_bundle",
    )


@dataclass(frozen=True)
class AmiConfig:
    host: str = opt("127.0.0.1", "Asterisk manager host.", "host")
    port: int = opt(5038, "Asterisk manager port.", "port")
    username: str = opt("failover", "AMI user (see deploy/asterisk/manager.conf).")
    secret_file: Secret | None = opt(None, "AMI secret (a file, or env:NAME).", "secret")
    ping_interval: float = opt(1.0, "Send an AMI Ping this often.", "duration")
    ping_timeout: float = opt(1.0, "A Ping reply later than this marks the link dead.", "duration")
    connect_timeout: float = opt(2.0, "Timeout of connect and login.", "duration")
    action_timeout: float = opt(2.0, "Timeout of other AMI actions.", "duration")


@dataclass(frozen=True)
class AriConfig:
    url: str = req('ARI base URL, e.g. "http://127.0.0.1:8088/ari".', "http_url")
    username: str = opt("failover", "ARI user.")
    password_file: Secret | None = opt(None, "ARI password (a file, or env:NAME).", "secret")
    app: str = opt("failover-bot", "Stasis application name for ARI test calls.")


@dataclass(frozen=True)
class RSeriesConfig:
    port: str = req(
        "pyserial URL of the appliance link: /dev/ttyUSB0, a pty path, socket://host:port.",
        "serial_url",
    )
    baudrate: int = opt(9600, "Serial speed.", "baudrate")
    heartbeat_interval: float = opt(1.0, "Send HB this often while heartbeating.", "duration")
    command_timeout: float = opt(1.0, "Timeout of one appliance command.", "duration")
    mode: Literal["manual", "auto"] = opt(
        "manual",
        "manual: only the bots move the spans; auto: the appliance also moves them "
        "when the active host's watchdog expires.",
    )
    watchdog: float | None = opt(
        5.0, 'Appliance host watchdog (whole seconds 1..60), or "off".', "watchdog"
    )
    standby_heartbeat: bool = opt(
        False, "Heartbeat from the standby too while it is ready (needed for AUTO mode)."
    )


@dataclass(frozen=True)
class MountConfig:
    device: str = req("Block device, e.g. /dev/drbd0.")
    path: str = req("Mount point.")
    fstype: str = opt("ext4", "File system type.")
    options: str = opt("defaults", "Mount options.")


@dataclass(frozen=True)
class DrbdConfig:
    resources: list[str] = req("DRBD resource names to promote and demote.", nonempty=True)
    mount: list[MountConfig] = opt([], "File systems on the DRBD devices: device, path, fstype.")
    drbdadm: str = opt("drbdadm", "The drbdadm command.")
    drbdsetup: str = opt("drbdsetup", "The drbdsetup command (DRBD 9 status --json).")


@dataclass(frozen=True)
class VipConfig:
    address: str = req('Floating address with prefix, e.g. "192.0.2.10/24".', "cidr")
    interface: str = req('Interface that carries it, e.g. "eth0".', "ifname")
    label: str | None = opt(None, "Address label (default: INTERFACE:fo).")
    arp_count: int = opt(3, "Gratuitous ARP packets per announcement.", "positive")
    arp_interval: float = opt(0.2, "Interval between gratuitous ARP packets.", "duration")
    refresh_interval: float = opt(
        30.0, "Re-announce the address this often while primary.", "duration"
    )
    netns: str | None = opt(None, "Network namespace to act in (labs and tests).")


@dataclass(frozen=True)
class AsteriskConfig:
    start: list[str] = opt(
        ["systemctl", "start", "asterisk"], "Command that starts Asterisk.", "argv"
    )
    stop: list[str] = opt(
        ["systemctl", "stop", "--job-mode=ignore-dependencies", "asterisk"],
        "Command that stops Asterisk (idempotent, as systemctl stop is); at once even "
        "during a shutdown, where the bot's unit is stopped before Asterisk's.",
        "argv",
    )
    kill: list[str] = opt(
        ["systemctl", "kill", "--signal=SIGKILL", "asterisk"],
        "Command that kills Asterisk at once (fencing).",
        "argv",
    )
    status: list[str] = opt(
        ["systemctl", "is-active", "--quiet", "asterisk"],
        "Command that exits 0 while Asterisk runs; also run as soon as the AMI link "
        "closes on the primary, when not running is a certain death, acted on at once "
        "(one that says not running while the AMI answers is alerted and not believed).",
        "argv",
    )
    boot_timeout: float = opt(60.0, "Wait this long for FullyBooted after start.", "duration")
    command_timeout: float = opt(20.0, "Timeout of the start/stop/status commands.", "duration")
    restart_attempts: int = opt(
        2, "Restarts of an unhealthy Asterisk when no standby is ready.", "nonnegative"
    )


@dataclass(frozen=True)
class HealthConfig:
    ami_grace: float = opt(
        3.0,
        "AMI link down (or Ping unanswered) this long before it counts as unhealthy; a "
        "closed link whose Asterisk the status command finds not running counts at once.",
        "duration",
    )
    ari_grace: float = opt(5.0, "ARI ping failing this long before it counts.", "duration")
    boot_grace: float = opt(
        0.0, "Extra time after FullyBooted is expected before its absence counts.", "duration"
    )


SPAN_ALARM_KINDS = ("red", "yellow", "blue", "recovering", "loopback", "notopen")
SPAN_POLICY_VALUES = ("failover", "alert", "ignore")
DEFAULT_SPAN_POLICY = {
    "red": "failover",
    "yellow": "alert",
    "blue": "alert",
    "recovering": "ignore",
    "loopback": "alert",
    "notopen": "alert",
}


@dataclass(frozen=True)
class SpansConfig:
    critical: list[int] = opt([], "Span numbers whose alarms count for failover.", "spans")
    policy: dict[str, str] = opt(
        dict(DEFAULT_SPAN_POLICY),
        "Alarm kind -> failover | alert | ignore (kinds: red, yellow, blue, recovering, "
        "loopback, notopen); given kinds override the defaults.",
        "span_policy",
    )
    grace: float = opt(
        15.0, "Span verdicts start this long after the spans were routed here.", "duration"
    )
    poll_interval: float = opt(30.0, "DAHDIShowStatus snapshot interval.", "duration")


@dataclass(frozen=True)
class TestCallConfig:
    channel: str = opt(
        "Local/100@test", "Channel to originate, e.g. Local/100@test or DAHDI/g1/NUMBER."
    )
    context: str | None = opt("test", "Dialplan context of the answering side.")
    exten: str | None = opt("answer", "Extension in that context.")
    priority: int = opt(1, "Priority in that context.", "positive")
    application: str | None = opt(None, "Instead of context/exten: an application, e.g. Wait.")
    data: str | None = opt(None, 'The application\'s data, e.g. "1".')
    timeout: float = opt(10.0, "The call must answer within this time.", "duration")
    interval: float = opt(
        30.0, 'Place a test call this often on the primary; "0s": never.', "duration"
    )
    failures: int = opt(3, "This many failed calls in a row make the node unhealthy.", "positive")
    variables: dict[str, str] = opt({}, "Extra channel variables for the test call.", "strmap")


@dataclass(frozen=True)
class WebhookConfig:
    url_file: Secret = req("Webhook URL (a file, or env:NAME); URLs are secrets.", "secret")
    format: Literal["slack", "json"] = opt("slack", "slack (text plus blocks) or json.")
    events: list[str] = opt([], "Event kinds to send; empty: all.")


@dataclass(frozen=True)
class NotifyConfig:
    webhooks: list[WebhookConfig] = opt([], "Webhook receivers.")
    timeout: float = opt(5.0, "Timeout of one webhook delivery.", "duration")
    max_attempts: int = opt(5, "Attempts per webhook message before it is dropped.", "positive")
    coalesce_window: float = opt(
        60.0, "Identical alerts within this window are sent once.", "duration"
    )


@dataclass(frozen=True)
class FenceConfig:
    escalate_after: float = opt(
        10.0,
        "A self-fence still incomplete this long after its first failed step runs "
        "escalate_command.",
        "duration",
    )
    escalate_command: list[str] = opt(
        [],
        "Optional argv run once when a self-fence stays incomplete for escalate_after "
        '(e.g. ["systemctl", "reboot", "--force", "--force"]); empty: none.',
        "argv",
    )


@dataclass(frozen=True)
class ApiConfig:
    listen: str = opt("127.0.0.1:9440", "HOST:PORT of the HTTP API.", "hostport")
    token_file: Secret | None = opt(
        None,
        "Bearer token for control endpoints (a file, or env:NAME); unset: control off.",
        "secret",
    )


@dataclass(frozen=True)
class Config:
    node: NodeConfig = req("This server.")
    cluster: ClusterConfig = req("The cluster and its lease timings.")
    redis: RedisConfig = opt(RedisConfig(), "The cluster bus.")
    ami: AmiConfig = opt(AmiConfig(), "Asterisk manager interface.")
    ari: AriConfig | None = opt(None, "Asterisk REST interface (optional).")
    rseries: RSeriesConfig | None = opt(None, "R-Series failover appliance (optional).")
    drbd: DrbdConfig | None = opt(None, "DRBD replicated storage (optional).")
    vip: VipConfig | None = opt(None, "Floating IP address (optional).")
    asterisk: AsteriskConfig = opt(AsteriskConfig(), "Asterisk service control.")
    health: HealthConfig = opt(HealthConfig(), "Local health grace periods.")
    spans: SpansConfig = opt(SpansConfig(), "T1/E1 span alarm policy.")
    test_call: TestCallConfig | None = opt(None, "Periodic AMI test calls (optional).")
    notify: NotifyConfig = opt(NotifyConfig(), "Webhooks.")
    api: ApiConfig = opt(ApiConfig(), "HTTP API.")
    fence: FenceConfig = opt(FenceConfig(), "Self-fence retries and escalation.")

    # Derived values used in several places.
    @property
    def peer_ids(self) -> list[str]:
        return [p.id for p in self.cluster.peers]

    def peer(self, node_id: str) -> PeerConfig | None:
        return next((p for p in self.cluster.peers if p.id == node_id), None)

    def settings_hash(self) -> str:
        """Hash of the settings both nodes must share; a difference is configuration drift."""
        c = self.cluster
        shared = {
            "cluster": [c.name, sorted([*self.peer_ids, self.node.id])],
            "timings": [c.lease_ttl, c.renew_interval, c.drift_margin, c.fence_budget],
            "holddowns": [c.failover_holddown, c.failed_holddown],
            "failback": [c.preferred_primary, c.failback_delay, c.failback_idle_only],
            "rseries_mode": self.rseries.mode if self.rseries else None,
            "vip": self.vip.address if self.vip else None,
            "drbd": self.drbd.resources if self.drbd else None,
            "spans": [self.spans.critical, sorted(self.spans.policy.items()), self.spans.grace],
            "test_call": dataclasses.asdict(self.test_call) if self.test_call else None,
        }
        blob = json.dumps(shared, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


# --------------------------------------------------------------------------- parsing

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_IDENT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


def parse_duration(text: str) -> float:
    """``"500ms"`` -> 0.5, ``"3s"`` -> 3.0, ``"2m"`` -> 120.0, ``"1h"`` -> 3600.0."""
    match = _DURATION_RE.match(text)
    if not match:
        raise ValueError(f'not a duration: {text!r} (use e.g. "500ms", "3s", "2m", "1h")')
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def format_duration(seconds: float) -> str:
    if seconds and seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds >= 60 and seconds % 3600 == 0:
        return f"{int(seconds // 3600)}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{int(seconds // 60)}m"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"


def read_secret(spec: str, base_dir: Path) -> Secret:
    """``env:NAME`` reads an environment variable; anything else is a file path."""
    if spec.startswith("env:"):
        name = spec[4:]
        if not name:
            raise ValueError("env: needs a variable name")
        value = os.environ.get(name)
        if value is None:
            raise ValueError(f"environment variable {name} is not set")
        return Secret(value.strip(), spec)
    path = Path(spec)
    if not path.is_absolute():
        path = base_dir / path
    try:
        value = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {spec}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ValueError(f"secret file {spec} is not UTF-8 text") from None
    if not value:
        raise ValueError(f"secret file {spec} is empty")
    return Secret(value, spec)


def split_hostport(text: str) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"expected HOST:PORT, got {text!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range 1..65535")
    return host.strip("[]"), port


ALL_SECRETS = None  # load_config(secrets=...): every secret read at load time
# What the cluster verbs (status, events, check, pause, switchover...) read: the
# Redis passwords, root:failover 0640 in the guide. Nothing else is opened.
BUS_SECRETS = frozenset({"redis.password_file", "redis.sentinel_password_file"})


def _secret_key(key: str) -> str:
    """``notify.webhooks[0].url_file`` -> ``notify.webhooks.url_file``."""
    return re.sub(r"\[\d+\]", "", key)


class _Walker:
    """Converts raw TOML values into the dataclasses, collecting every problem."""

    def __init__(self, base_dir: Path, secrets: frozenset[str] | None = ALL_SECRETS) -> None:
        self.base_dir = base_dir
        self.secrets = secrets
        self.problems: list[tuple[str, str]] = []

    def fail(self, key: str, reason: str) -> None:
        self.problems.append((key, reason))

    def build(self, cls: type, raw: Any, prefix: str) -> Any:
        if not isinstance(raw, dict):
            self.fail(prefix, f"expected a table, got {_tomltype(raw)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        for key in raw:
            if key not in fields:
                self.fail(_join(prefix, key), "unknown key" + _did_you_mean(key, fields))
        values: dict[str, Any] = {}
        ok = True
        for name, fld in fields.items():
            key = _join(prefix, name)
            if name not in raw:
                if fld.metadata.get("required"):
                    self.fail(key, "missing (required)")
                    ok = False
                continue
            value = self.convert(hints[name], raw[name], key, fld.metadata)
            if value is _INVALID:
                # Keep going with the default, so the whole-file rules can still
                # report what else is wrong; the problem itself is recorded.
                if fld.metadata.get("required"):
                    ok = False
            else:
                values[name] = value
        if not ok:
            return None
        try:
            return cls(**values)
        except TypeError as exc:  # pragma: no cover - schema bug, not user input
            self.fail(prefix, str(exc))
            return None

    def convert(self, hint: Any, raw: Any, key: str, meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(hint)
        args = typing.get_args(hint)
        if origin in (typing.Union, types.UnionType):
            non_none = [a for a in args if a is not type(None)]
            if raw is None:
                return None
            hint = non_none[0] if len(non_none) == 1 else hint
            origin, args = typing.get_origin(hint), typing.get_args(hint)
        kind = meta.get("kind")
        try:
            if kind:
                return self.convert_kind(kind, raw, key, meta)
            if dataclasses.is_dataclass(hint):
                built = self.build(typing.cast(type, hint), raw, key)
                return _INVALID if built is None else built
            if origin is Literal:
                if raw not in args:
                    choices = ", ".join(repr(a) for a in args)
                    raise ValueError(f"must be one of {choices}, got {raw!r}")
                return raw
            if origin is list:
                (item,) = args
                if not isinstance(raw, list):
                    raise ValueError(f"expected a list, got {_tomltype(raw)}")
                if meta.get("nonempty") and not raw:
                    raise ValueError("must not be empty")
                out = [self.convert(item, v, f"{key}[{i}]", {}) for i, v in enumerate(raw)]
                return _INVALID if _INVALID in out else out
            if origin is dict:
                if not isinstance(raw, dict):
                    raise ValueError(f"expected a table, got {_tomltype(raw)}")
                return {str(k): str(v) for k, v in raw.items()}
            return _scalar(hint, raw)
        except ValueError as exc:
            self.fail(key, str(exc))
            return _INVALID

    def convert_kind(self, kind: str, raw: Any, key: str, meta: Mapping[str, Any]) -> Any:
        if kind == "duration":
            seconds = parse_duration(_need(str, raw))
            return seconds
        if kind == "watchdog":
            text = _need(str, raw)
            if text.strip().lower() == "off":
                return None
            seconds = parse_duration(text)
            if seconds != int(seconds) or not 1 <= seconds <= 60:
                raise ValueError('must be whole seconds from 1s to 60s, or "off"')
            return seconds
        if kind == "secret":
            spec = _need(str, raw)
            if self.secrets is not None and _secret_key(key) not in self.secrets:
                return Secret.deferred(spec, self.base_dir, key)
            return read_secret(spec, self.base_dir)
        if kind == "ident":
            text = _need(str, raw)
            if not _IDENT_RE.match(text):
                raise ValueError(f"{text!r} is not a valid id (letters, digits, '-', '_', '.')")
            return text
        if kind == "argv":
            items = _need(list, raw)
            if not all(isinstance(i, str) for i in items):
                raise ValueError("must be a list of strings (an argument list, not a shell line)")
            if meta.get("required") and not items:
                raise ValueError("must not be empty")
            return list(items)
        if kind == "port":
            port = _need(int, raw)
            if not 0 < port < 65536:
                raise ValueError(f"port {port} out of range 1..65535")
            return port
        if kind in ("positive", "nonnegative"):
            number = _need(int, raw)
            if number < (1 if kind == "positive" else 0):
                raise ValueError(f"must be {'at least 1' if kind == 'positive' else '0 or more'}")
            return number
        if kind == "baudrate":
            rate = _need(int, raw)
            if rate not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
                raise ValueError(f"{rate} is not a standard baud rate")
            return rate
        if kind == "host":
            text = _need(str, raw)
            if not text or any(c.isspace() for c in text):
                raise ValueError(f"{text!r} is not a host name or address")
            return text
        if kind == "hostport":
            text = _need(str, raw)
            host, _ = split_hostport(text)
            if host not in ("localhost", "*"):
                _check_ip_or_name(host)
            return text
        if kind == "hostports":
            items = _need(list, raw)
            for item in items:
                split_hostport(_need(str, item))
            return list(items)
        if kind == "http_url":
            text = _need(str, raw)
            if not re.match(r"^https?://[^/\s:]+(:\d{1,5})?(/\S*)?$", text):
                raise ValueError(f"{text!r} is not an http:// or https:// URL")
            return text.rstrip("/")
        if kind == "redis_url":
            text = _need(str, raw)
            if not re.match(r"^(redis|rediss|unix)://\S+$", text):
                raise ValueError(f"{text!r} is not a redis://, rediss:// or unix:// URL")
            if re.match(r"^rediss?://[^/@]*:[^/@]+@", text):
                raise ValueError("put the password in redis.password_file, not in the URL")
            return text
        if kind == "serial_url":
            text = _need(str, raw)
            if text.startswith("loop://"):
                raise ValueError("loop:// does not work with the asyncio serial driver")
            if not (text.startswith("/") or re.match(r"^[a-z]+://", text)):
                raise ValueError(f"{text!r} is neither a device path nor a pyserial URL")
            return text
        if kind == "cidr":
            text = _need(str, raw)
            if "/" not in text:
                raise ValueError(f"{text!r} needs a prefix length, e.g. 192.0.2.10/24")
            try:
                iface = ipaddress.ip_interface(text)
            except ValueError:
                raise ValueError(f"{text!r} is not an address with prefix") from None
            if iface.version == 6:
                raise ValueError(
                    "IPv6 floating addresses are not supported yet (no tool for unsolicited "
                    "neighbour advertisements is wired in)"
                )
            return text
        if kind == "ifname":
            text = _need(str, raw)
            if not _IFNAME_RE.match(text):
                raise ValueError(f"{text!r} is not an interface name")
            return text
        if kind == "ca_bundle":
            text = _need(str, raw)
            if text.startswith("env:"):
                pem = read_secret(text, self.base_dir).reveal()
                if "-----BEGIN CERTIFICATE-----" not in pem:
                    raise ValueError(f"{text} holds no PEM certificate")
                return text
            if not os.access(self._path(text), os.R_OK):
                raise ValueError(f"cannot read {text}")
            return text
        if kind == "readable":
            text = _need(str, raw)
            if not os.access(self._path(text), os.R_OK):
                raise ValueError(f"cannot read {text}")
            return text
        if kind == "spans":
            items = _need(list, raw)
            for item in items:
                if not isinstance(item, int) or isinstance(item, bool) or item < 1:
                    raise ValueError(f"span numbers are positive integers, got {item!r}")
            return list(items)
        if kind == "span_policy":
            table = _need(dict, raw)
            merged = dict(DEFAULT_SPAN_POLICY)
            for alarm, action in table.items():
                if alarm not in SPAN_ALARM_KINDS:
                    raise ValueError(
                        f"unknown alarm kind {alarm!r}"
                        + _did_you_mean(alarm, SPAN_ALARM_KINDS)
                        + f" (kinds: {', '.join(SPAN_ALARM_KINDS)})"
                    )
                if action not in SPAN_POLICY_VALUES:
                    raise ValueError(
                        f"unknown policy {action!r} for {alarm} "
                        f"(use {', '.join(SPAN_POLICY_VALUES)})"
                    )
                merged[alarm] = action
            return merged
        if kind == "strmap":
            table = _need(dict, raw)
            for k, v in table.items():
                if not isinstance(v, (str, int, float, bool)):
                    raise ValueError(f"value of {k!r} must be a string or number")
            return {str(k): str(v) for k, v in table.items()}
        raise AssertionError(f"unknown kind {kind}")  # pragma: no cover

    def _path(self, text: str) -> Path:
        path = Path(text)
        return path if path.is_absolute() else self.base_dir / path


_INVALID = object()


def _need(typ: type, raw: Any) -> Any:
    if typ is int and (isinstance(raw, bool) or not isinstance(raw, int)):
        raise ValueError(f"expected an integer, got {_tomltype(raw)}")
    if not isinstance(raw, typ):
        raise ValueError(f"expected {_typename(typ)}, got {_tomltype(raw)}")
    return raw


def _scalar(hint: Any, raw: Any) -> Any:
    if hint is bool:
        if not isinstance(raw, bool):
            raise ValueError(f"expected true or false, got {_tomltype(raw)}")
        return raw
    if hint is int:
        return _need(int, raw)
    if hint is float:
        if isinstance(raw, bool) or not isinstance(raw, (int, float)):
            raise ValueError(f"expected a number, got {_tomltype(raw)}")
        return float(raw)
    if hint is str:
        return _need(str, raw)
    if hint is Secret:  # pragma: no cover - secrets always carry the kind
        raise ValueError("secret fields need a kind")
    raise ValueError(f"unsupported type {hint}")  # pragma: no cover


def _check_ip_or_name(host: str) -> None:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$", host):
            raise ValueError(f"{host!r} is not an address or host name") from None


def _typename(typ: type) -> str:
    return {str: "a string", list: "a list", dict: "a table", int: "an integer"}.get(
        typ, typ.__name__
    )


def _tomltype(raw: Any) -> str:
    if isinstance(raw, bool):
        return f"boolean {str(raw).lower()}"
    if isinstance(raw, int):
        return f"integer {raw}"
    if isinstance(raw, float):
        return f"number {raw}"
    if isinstance(raw, str):
        return f"string {raw!r}"
    if isinstance(raw, list):
        return "a list"
    if isinstance(raw, dict):
        return "a table"
    return type(raw).__name__


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _did_you_mean(key: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --------------------------------------------------------------------------- whole-file rules


def _cross_checks(cfg: Config, problems: list[tuple[str, str]]) -> None:
    c = cfg.cluster
    budget = c.renew_interval + 2 * cfg.redis.timeout + c.drift_margin + c.fence_budget
    if budget > c.lease_ttl + 1e-9:
        problems.append(
            (
                "cluster.lease_ttl",
                f"renew_interval + 2 x redis.timeout + drift_margin + fence_budget = "
                f"{format_duration(budget)} exceeds lease_ttl {format_duration(c.lease_ttl)}",
            )
        )
    if c.renew_interval <= 0:
        problems.append(("cluster.renew_interval", "must be greater than 0"))
    seen: set[str] = set()
    for i, peer in enumerate(c.peers):
        if peer.id == cfg.node.id:
            problems.append((f"cluster.peers[{i}].id", f"{peer.id!r} is this node's own id"))
        if peer.id in seen:
            problems.append((f"cluster.peers[{i}].id", f"duplicate peer {peer.id!r}"))
        seen.add(peer.id)
    if c.preferred_primary and c.preferred_primary not in {cfg.node.id, *seen}:
        problems.append(
            ("cluster.preferred_primary", f"{c.preferred_primary!r} is not a node of this cluster")
        )
    if c.peers and c.secret_file is None:
        problems.append(("cluster.secret_file", "required when peers are configured"))
    if cfg.redis.sentinels and not cfg.redis.service_name:
        problems.append(("redis.service_name", "required with redis.sentinels"))
    if cfg.ami.ping_interval <= 0:
        problems.append(("ami.ping_interval", "must be greater than 0"))
    if cfg.rseries is not None:
        if cfg.node.rseries_host is None:
            problems.append(("node.rseries_host", "required when [rseries] is configured"))
        if cfg.rseries.mode == "auto" and cfg.rseries.watchdog is None:
            problems.append(("rseries.watchdog", "auto mode needs the appliance watchdog on"))
        if cfg.rseries.heartbeat_interval <= 0:
            problems.append(("rseries.heartbeat_interval", "must be greater than 0"))
        elif (
            cfg.rseries.watchdog is not None
            and cfg.rseries.heartbeat_interval >= cfg.rseries.watchdog
        ):
            problems.append(("rseries.heartbeat_interval", "must be shorter than rseries.watchdog"))
    tc = cfg.test_call
    if tc is not None:
        if tc.application is None and (tc.context is None or tc.exten is None):
            problems.append(("test_call", "needs context and exten, or application"))
        if tc.data is not None and tc.application is None:
            problems.append(("test_call.data", "only used with test_call.application"))
    for mount in cfg.drbd.mount if cfg.drbd else []:
        if not mount.path.startswith("/"):
            problems.append(("drbd.mount", f"mount path {mount.path!r} must be absolute"))
    for i, hook in enumerate(cfg.notify.webhooks):
        if hook.url_file.loaded and not re.match(r"^https?://", hook.url_file.reveal()):
            problems.append(
                (f"notify.webhooks[{i}].url_file", "does not hold an http:// or https:// URL")
            )
    if c.stop_drain_timeout < 0:
        problems.append(("cluster.stop_drain_timeout", "must be 0 or more"))
    _check_api_reachable(cfg, problems)
    if not cfg.node.state_dir.startswith("/"):
        problems.append(("node.state_dir", "must be an absolute path"))


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_api_reachable(cfg: Config, problems: list[tuple[str, str]]) -> None:
    """A peer on another host cannot reach an API bound to loopback: no peer channel."""
    host, _ = split_hostport(cfg.api.listen)
    if not _loopback(host):
        return
    for peer in cfg.cluster.peers:
        peer_host = urlparse(peer.api).hostname or ""
        if not _loopback(peer_host):
            problems.append(
                (
                    "api.listen",
                    f"{cfg.api.listen} is loopback only: {peer.id} ({peer.api}) cannot reach "
                    "this node's peer channel; listen on this node's cluster LAN address",
                )
            )
            return


def parse_config(
    text: str, base_dir: Path | str = ".", *, secrets: frozenset[str] | None = ALL_SECRETS
) -> Config:
    """Parse TOML text; raise ConfigError listing every problem.

    ``secrets``: the secret keys (``redis.password_file``, ``notify.webhooks.url_file``)
    read now; the others are read at their first use. Default: all of them now.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([("", f"not valid TOML: {exc}")]) from None
    walker = _Walker(Path(base_dir), secrets)
    cfg = walker.build(Config, raw, "")
    problems = walker.problems
    if cfg is not None:
        seen = {key for key, _ in problems}
        extra: list[tuple[str, str]] = []
        _cross_checks(cfg, extra)
        problems.extend(p for p in extra if p[0] not in seen)
    if problems or cfg is None:
        raise ConfigError(problems or [("", "invalid configuration")])
    return typing.cast(Config, cfg)


def load_config(path: str | Path, *, secrets: frozenset[str] | None = ALL_SECRETS) -> Config:
    """Read and validate a node's configuration file (``secrets``: see parse_config)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([("", f"{path}: no such file")]) from None
    except OSError as exc:
        raise ConfigError([("", f"{path}: {exc.strerror or exc}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([("", f"{path}: not UTF-8 text")]) from None
    return parse_config(text, path.parent, secrets=secrets)


def summary(cfg: Config) -> str:
    """The one-line summary check-config prints."""
    parts = [
        f"node {cfg.node.id} in cluster {cfg.cluster.name}",
        f"peers {','.join(cfg.peer_ids) or 'none'}",
        "lease "
        + f"{format_duration(cfg.cluster.lease_ttl)}/{format_duration(cfg.cluster.renew_interval)}",
        f"redis {'sentinel ' + cfg.redis.service_name if cfg.redis.sentinels else 'direct'}",
    ]
    for name in ("rseries", "drbd", "vip", "ari", "test_call"):
        parts.append(f"{name} {'on' if getattr(cfg, name) is not None else 'off'}")
    return "config OK: " + "; ".join(parts)


def iter_documented_keys(cls: type = Config, prefix: str = "") -> typing.Iterator[tuple[str, Any]]:
    """Every key of the schema with its field, for the README reference check."""
    hints = typing.get_type_hints(cls)
    for fld in dataclasses.fields(cls):
        key = _join(prefix, fld.name)
        hint = hints[fld.name]
        inner = _dataclass_in(hint)
        if inner is not None and prefix == "":
            yield from iter_documented_keys(inner, key)
        elif inner is not None:
            yield key, fld
            yield from iter_documented_keys(inner, key)
        else:
            yield key, fld


def _dataclass_in(hint: Any) -> type | None:
    if dataclasses.is_dataclass(hint):
        return typing.cast(type, hint)
    for arg in typing.get_args(hint):
        found = _dataclass_in(arg)
        if found is not None:
            return found
    return None
