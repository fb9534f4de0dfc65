"""Configuration: every validation rule, the four example files, check-config's output."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from bot.config import (
    Config,
    ConfigError,
    Secret,
    load_config,
    parse_config,
    parse_duration,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "deploy" / "examples"
SECRET_DIRS = ("/etc/failover-bot/", "/tmp/failover-lab/")


def materialise(example: str, tmp_path: Path) -> Path:
    """Copy an example with its secret paths moved into tmp_path, and create those files."""
    text = (EXAMPLES / example).read_text()
    for prefix in SECRET_DIRS:
        text = text.replace(prefix, f"{tmp_path}/")
    for match in re.finditer(r'_file = "([^"]+)"', text):
        path = Path(match.group(1))
        path.parent.mkdir(parents=True, exist_ok=True)
        content = "https://hooks.example.invalid/x" if path.name.endswith(".url") else "s3cret"
        path.write_text(content + "\n")
    out = tmp_path / example
    out.write_text(text)
    return out


def minimal(tmp_path: Path, extra: str = "", cluster_extra: str = "") -> str:
    secret = tmp_path / "cluster.secret"
    secret.write_text("topsecret\n")
    return f"""
[node]
id = "a"
state_dir = "{tmp_path}/state"

[cluster]
name = "lab"
peers = [{{ id = "b", api = "http://127.0.0.1:9442" }}]
secret_file = "{secret}"
{cluster_extra}
{extra}
"""


def problems(text: str, base: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base)
    return dict(info.value.problems)


@pytest.mark.parametrize(
    "example",
    ["node-a.toml", "node-b.toml", "lab-a.toml", "lab-b.toml", "fast-a.toml", "fast-b.toml"],
)
def test_examples_pass_check_config(example: str, tmp_path: Path) -> None:
    path = materialise(example, tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("config OK: node ")


def test_fast_profile_still_meets_the_timing_rule_and_check_config_enforces_it(
    tmp_path: Path,
) -> None:
    text = materialise("fast-a.toml", tmp_path).read_text()
    cfg = parse_config(text, tmp_path)
    c = cfg.cluster
    assert c.lease_ttl <= 0.5
    assert c.renew_interval + 2 * cfg.redis.timeout + c.drift_margin + c.fence_budget <= c.lease_ttl
    # One step shorter and the rule no longer holds: check-config must say so.
    tighter = text.replace('lease_ttl = "500ms"', 'lease_ttl = "300ms"')
    assert tighter != text
    assert "exceeds lease_ttl" in problems(tighter, tmp_path)["cluster.lease_ttl"]


def test_five_mistakes_are_all_named(tmp_path: Path) -> None:
    text = materialise("node-a.toml", tmp_path).read_text()
    text = text.replace('lease_ttl = "3s"', 'lease_ttl = "3 seconds"')  # bad duration
    text = text.replace("port = 5038", "port = 70000")  # bad port
    text = text.replace('address = "10.20.0.10/24"', 'address = "10.20.0.300/24"')  # bad address
    text = text.replace('mode = "manual"', 'mode = "sometimes"')  # bad choice
    text = text.replace("ping_interval =", "ping_intervall =")  # unknown key
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    for key in (
        "cluster.lease_ttl",
        "ami.port",
        "vip.address",
        "rseries.mode",
        "ami.ping_intervall",
    ):
        assert re.search(rf"^{re.escape(key)}: ", proc.stderr, re.M), (key, proc.stderr)
    assert "did you mean 'ping_interval'" in proc.stderr


def test_minimal_config_has_operator_defaults(tmp_path: Path) -> None:
    cfg = parse_config(minimal(tmp_path), tmp_path)
    assert isinstance(cfg, Config)
    assert cfg.cluster.lease_ttl == 3.0
    assert cfg.cluster.renew_interval == 1.0
    assert cfg.redis.timeout == 0.5
    assert cfg.cluster.drift_margin == 0.1
    assert cfg.cluster.fence_budget == 0.5
    assert cfg.ami.ping_interval == 1.0 and cfg.ami.ping_timeout == 1.0
    assert cfg.rseries is None and cfg.drbd is None and cfg.vip is None
    assert cfg.spans.policy["red"] == "failover" and cfg.spans.policy["blue"] == "alert"


def test_config_is_frozen(tmp_path: Path) -> None:
    cfg = parse_config(minimal(tmp_path), tmp_path)
    with pytest.raises(AttributeError):
        cfg.cluster.lease_ttl = 5.0  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("3s", 3.0), ("2m", 120.0), ("1h", 3600.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["3", "3 sec", "-1s", "s", "1d", ""])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_duration_must_be_a_string(tmp_path: Path) -> None:
    found = problems(minimal(tmp_path, cluster_extra="lease_ttl = 3"), tmp_path)
    assert "expected a string" in found["cluster.lease_ttl"]


def test_unknown_key_and_section_with_suggestion(tmp_path: Path) -> None:
    text = minimal(tmp_path, extra='[amii]\nhost = "x"\n', cluster_extra='renew_intervl = "1s"')
    found = problems(text, tmp_path)
    assert "did you mean 'renew_interval'" in found["cluster.renew_intervl"]
    assert "did you mean 'ami'" in found["amii"]


def test_wrong_types(tmp_path: Path) -> None:
    text = minimal(
        tmp_path,
        extra='[rseries]\nport = "/dev/ttyS0"\nstandby_heartbeat = "yes"\n'
        '[asterisk]\nstart = "systemctl start asterisk"\n',
    )
    found = problems(text, tmp_path)
    assert "true or false" in found["rseries.standby_heartbeat"]
    assert "expected a list" in found["asterisk.start"]


def test_missing_required_keys(tmp_path: Path) -> None:
    found = problems('[node]\nstate_dir = "/tmp/x"\n', tmp_path)
    assert found["node.id"] == "missing (required)"
    assert found["cluster"] == "missing (required)"


def test_bad_addresses_and_ports(tmp_path: Path) -> None:
    text = minimal(
        tmp_path,
        extra='[ami]\nport = 0\n[api]\nlisten = "localhost"\n'
        '[vip]\naddress = "192.0.2.10"\ninterface = "eth0"\n',
    )
    found = problems(text, tmp_path)
    assert "out of range" in found["ami.port"]
    assert "HOST:PORT" in found["api.listen"]
    assert "prefix length" in found["vip.address"]


def test_peer_urls_and_redis_urls(tmp_path: Path) -> None:
    text = minimal(tmp_path, extra='[redis]\nurl = "redis://:pw@127.0.0.1:6379"\n')
    text = text.replace("http://127.0.0.1:9442", "ftp://x")
    found = problems(text, tmp_path)
    assert "cluster.peers[0].api" in found
    assert "password_file" in found["redis.url"]


def test_timing_rule_of_design(tmp_path: Path) -> None:
    # 1s + 2 x 0.5s + 0.1s + 0.5s = 2.6s > 2s
    found = problems(minimal(tmp_path, cluster_extra='lease_ttl = "2s"'), tmp_path)
    assert "exceeds lease_ttl 2s" in found["cluster.lease_ttl"]
    # exactly at the limit is fine
    parse_config(minimal(tmp_path, cluster_extra='lease_ttl = "2600ms"'), tmp_path)


def test_peer_with_own_id(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace('{ id = "b"', '{ id = "a"')
    found = problems(text, tmp_path)
    assert "this node's own id" in found["cluster.peers[0].id"]


def test_unknown_span_policy(tmp_path: Path) -> None:
    found = problems(
        minimal(tmp_path, extra='[spans]\npolicy = { red = "panic", purple = "alert" }\n'),
        tmp_path,
    )
    assert "spans.policy" in found
    text = minimal(tmp_path, extra='[spans]\npolicy = { red = "panic" }\n')
    assert "unknown policy 'panic'" in problems(text, tmp_path)["spans.policy"]


def test_unreadable_secret_file(tmp_path: Path) -> None:
    text = minimal(tmp_path, extra=f'[ami]\nsecret_file = "{tmp_path}/nope"\n')
    found = problems(text, tmp_path)
    assert "cannot read secret file" in found["ami.secret_file"]


def test_secret_from_env_is_never_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMI_SECRET_FOR_TEST", "hunter2-value")
    cfg = parse_config(
        minimal(tmp_path, extra='[ami]\nsecret_file = "env:AMI_SECRET_FOR_TEST"\n'), tmp_path
    )
    assert isinstance(cfg.ami.secret_file, Secret)
    assert cfg.ami.secret_file.reveal() == "hunter2-value"
    assert "hunter2" not in repr(cfg) and "hunter2" not in str(cfg.ami)
    assert "topsecret" not in repr(cfg)


def test_missing_env_secret(tmp_path: Path) -> None:
    text = minimal(tmp_path, extra='[ami]\nsecret_file = "env:SURELY_NOT_SET_12345"\n')
    assert "not set" in problems(text, tmp_path)["ami.secret_file"]


def test_not_toml_gives_line_and_column(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[node]\nid = "a"\nthis is not toml\n')
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert re.search(r"line 3, column \d+", proc.stderr), proc.stderr


def test_missing_file_exits_2(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "check-config", "--config", str(tmp_path / "none.toml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 2
    assert "no such file" in proc.stderr


def test_cross_section_rules(tmp_path: Path) -> None:
    text = minimal(
        tmp_path,
        extra='[rseries]\nport = "/dev/ttyS0"\nmode = "auto"\nwatchdog = "off"\n'
        '[test_call]\ncontext = "test"\ndata = "1"\n',
        cluster_extra='preferred_primary = "c"',
    )
    found = problems(text, tmp_path)
    assert "node.rseries_host" in found
    assert "watchdog on" in found["rseries.watchdog"]
    assert "preferred_primary" in next(k for k in found if k.startswith("cluster.preferred"))
    assert "test_call.data" in found


def test_watchdog_range(tmp_path: Path) -> None:
    text = minimal(tmp_path, extra='[rseries]\nport = "/dev/ttyS0"\nwatchdog = "90s"\n')
    text = text.replace('id = "a"\n', 'id = "a"\nrseries_host = "A"\n', 1)
    assert "1s to 60s" in problems(text, tmp_path)["rseries.watchdog"]


def test_ipv6_floating_address_is_refused_clearly(tmp_path: Path) -> None:
    text = minimal(tmp_path, extra='[vip]\naddress = "2001:db8::10/64"\ninterface = "eth0"\n')
    assert "IPv6" in problems(text, tmp_path)["vip.address"]


def test_peers_require_cluster_secret(tmp_path: Path) -> None:
    text = minimal(tmp_path).replace(f'secret_file = "{tmp_path}/cluster.secret"', "")
    assert "required" in problems(text, tmp_path)["cluster.secret_file"]


def test_webhook_url_file_must_hold_url(tmp_path: Path) -> None:
    hook = tmp_path / "hook.url"
    hook.write_text("not a url")
    text = minimal(tmp_path, extra=f'[notify]\nwebhooks = [{{ url_file = "{hook}" }}]\n')
    found = problems(text, tmp_path)
    assert "http" in found["notify.webhooks[0].url_file"]
    assert "not a url" not in str(found)


def test_settings_hash_ignores_node_local_values(tmp_path: Path) -> None:
    a = load_config(materialise("lab-a.toml", tmp_path))
    b = load_config(materialise("lab-b.toml", tmp_path))
    assert a.settings_hash() == b.settings_hash()
    text = (
        materialise("lab-b.toml", tmp_path)
        .read_text()
        .replace('lease_ttl = "3s"', 'lease_ttl = "4s"')
    )
    c = parse_config(text, tmp_path)
    assert c.settings_hash() != a.settings_hash()


def test_loop_url_is_refused(tmp_path: Path) -> None:
    text = minimal(tmp_path, extra='[rseries]\nport = "loop://"\n')
    assert "loop://" in problems(text, tmp_path)["rseries.port"]


def test_a_verb_reads_only_the_secrets_it_asks_for(tmp_path: Path) -> None:
    from bot.config import BUS_SECRETS, ConfigError, load_config

    (tmp_path / "redis.password").write_text("r3dis\n")
    (tmp_path / "node.toml").write_text(
        '[node]\nid = "a"\n[cluster]\nname = "t"\n'
        'peers = [{ id = "b", api = "http://127.0.0.2:9440" }]\n'
        'secret_file = "cluster.secret"\n'  # missing: as unreadable as a root-only file
        '[redis]\npassword_file = "redis.password"\n'
        '[ami]\nsecret_file = "ami.secret"\n'
        '[notify]\nwebhooks = [{ url_file = "slack.url" }]\n'
    )
    # Every secret at once (run, check-config): each unreadable one is named.
    with pytest.raises(ConfigError) as everything:
        load_config(tmp_path / "node.toml")
    keys = {key for key, _ in everything.value.problems}
    assert keys == {"cluster.secret_file", "ami.secret_file", "notify.webhooks[0].url_file"}
    # The cluster verbs: the Redis password only; the others are never opened...
    cfg = load_config(tmp_path / "node.toml", secrets=BUS_SECRETS)
    assert cfg.redis.password_file is not None
    assert cfg.redis.password_file.reveal() == "r3dis"
    assert cfg.cluster.secret_file is not None and not cfg.cluster.secret_file.loaded
    # ...unless used: then the error names the key, as at load time.
    with pytest.raises(ConfigError) as used:
        cfg.cluster.secret_file.reveal()
    assert used.value.problems[0][0] == "cluster.secret_file"
    assert "cluster.secret" in used.value.problems[0][1]
    (tmp_path / "cluster.secret").write_text("k3y\n")
    assert cfg.cluster.secret_file.reveal() == "k3y"
    assert "k3y" not in repr(cfg)
