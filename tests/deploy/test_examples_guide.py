"""The example pair, deploy/asterisk and deploy/README.md agree with each other."""

from __future__ import annotations

import re
import tomllib
from typing import Any

import pytest

from tests.deploy.conftest import REPO
from tests.deploy.test_asterisk_files import sections

DEPLOY = REPO / "deploy"
GUIDE = DEPLOY / "README.md"
PRODUCTION = ["node-a.toml", "node-b.toml"]
ALL_EXAMPLES = [*PRODUCTION, "lab-a.toml", "lab-b.toml"]


def example(name: str) -> dict[str, Any]:
    return tomllib.loads((DEPLOY / "examples" / name).read_text())


def dialplan() -> dict[str, dict[str, list[str]]]:
    return sections((DEPLOY / "asterisk" / "extensions_failover.conf").read_text())


def extensions(context: dict[str, list[str]]) -> set[str]:
    return {line.split(",", 1)[0] for line in context.get("exten", [])}


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_test_call_reaches_the_shipped_dialplan(name: str) -> None:
    call = example(name)["test_call"]
    plan = dialplan()
    match = re.fullmatch(r"Local/([^@]+)@([^/]+)", call["channel"])
    assert match, f"{name}: test_call.channel {call['channel']!r} is not a Local channel"
    exten, context = match.groups()
    assert context in plan, f"{name}: context {context!r} is not in extensions_failover.conf"
    assert exten in extensions(plan[context]), f"{name}: no extension {exten!r} in [{context}]"
    assert call["context"] in plan, f"{name}: test_call.context {call['context']!r} missing"
    assert call["exten"] in extensions(plan[call["context"]])


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_files_the_examples_point_at_exist(name: str) -> None:
    text = (DEPLOY / "examples" / name).read_text()
    for ref in re.findall(r"\bdeploy/[\w./-]+", text):
        assert (REPO / ref.rstrip(".")).exists(), f"{name} names {ref}, which does not exist"


def _paths(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value.startswith(("/etc/", "/var/", "/dev/", "/srv/")) else []
    if isinstance(value, dict):
        return [p for v in value.values() for p in _paths(v)]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v)]
    return []


def _secret_keys(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    if isinstance(value, dict):
        for key, v in value.items():
            if key.endswith("_file") and isinstance(v, str) and key != "tls_ca_file":
                out.append((prefix + key, v))
            else:
                out += _secret_keys(v, f"{prefix}{key}.")
    elif isinstance(value, list):
        for v in value:
            out += _secret_keys(v, prefix)
    return out


@pytest.mark.parametrize("name", PRODUCTION)
def test_every_path_in_the_example_is_in_the_guide(name: str) -> None:
    guide = GUIDE.read_text()
    for path in _paths(example(name)):
        assert path in guide, f"{name} names {path}; deploy/README.md never does"


@pytest.mark.parametrize("name", PRODUCTION)
def test_every_secret_file_is_listed_with_mode_and_owner(name: str) -> None:
    rows = [line for line in GUIDE.read_text().splitlines() if line.startswith("|")]
    for key, path in _secret_keys(example(name)):
        row = next((r for r in rows if f"`{path}`" in r), None)
        assert row is not None, f"{key} = {path}: no row in the guide's table of secret files"
        assert re.search(r"\b0[46][04]0\b", row), f"{path}: the guide gives no mode: {row}"
        assert re.search(r"\b\w+:\w+\b", row), f"{path}: the guide gives no owner: {row}"


def test_the_ari_user_of_the_examples_exists_in_asterisk() -> None:
    ari_conf = DEPLOY / "asterisk" / "ari.conf"
    http_conf = DEPLOY / "asterisk" / "http.conf"
    assert ari_conf.exists() and http_conf.exists(), "no ari.conf/http.conf snippet"
    for name in PRODUCTION:
        ari = example(name)["ari"]
        user = sections(ari_conf.read_text())[ari["username"]]
        assert user["type"] == ["user"]
        assert "password" not in user, "the password is included from a separate file"
        http = sections(http_conf.read_text())["general"]
        assert http["enabled"] == ["yes"]
        url = re.fullmatch(r"http://([^:/]+):(\d+)/ari", ari["url"])
        assert url, ari["url"]
        assert http["bindaddr"] == [url[1]] and http["bindport"] == [url[2]]
    guide = GUIDE.read_text()
    for include in ("ari_failover_secret.conf", "manager_failover_secret.conf"):
        assert (
            f'#include "{include}"'
            in (DEPLOY / "asterisk")
            .joinpath("ari.conf" if include.startswith("ari") else "manager.conf")
            .read_text()
        )
        assert f"/etc/asterisk/{include}" in guide, f"the guide never creates {include}"


def test_every_shipped_file_is_in_the_guides_table() -> None:
    guide = GUIDE.read_text()
    for sub in ("asterisk", "systemd", "redis", "examples"):
        for path in sorted((DEPLOY / sub).rglob("*")):
            if path.is_file() and path.name != "README.md":
                rel = path.relative_to(DEPLOY).as_posix()
                assert f"`{rel}`" in guide or f"`{path.name}`" in guide, f"{rel} not in the guide"


def test_manager_general_has_only_general_keys() -> None:
    # Asterisk rejects per-user keys in [general] ("Invalid keyword <writetimeout>").
    conf = sections((DEPLOY / "asterisk" / "manager.conf").read_text())
    assert "writetimeout" not in conf["general"]
    assert conf["failover"]["writetimeout"] == ["1000"]


def _at(text: str, needle: str) -> int:
    assert needle in text, f"the guide never says {needle!r}"
    return text.index(needle)


def test_guide_steps_come_in_an_order_that_works() -> None:
    guide = GUIDE.read_text()
    # The Asterisk drop-in needs /srv/pbx mounted before any test call.
    assert _at(guide, "mkdir -p /srv/pbx") < _at(guide, "mount -o noatime /dev/drbd0 /srv/pbx")
    assert _at(guide, "mount -o noatime /dev/drbd0 /srv/pbx") < _at(guide, "failover-bot test-call")
    assert _at(guide, "chown -R asterisk:asterisk /srv/pbx") < _at(guide, "failover-bot test-call")
    # The device is handed back (Secondary, unmounted) before the bot starts.
    secondary = _at(guide, "umount /srv/pbx && drbdadm secondary pbx")
    assert _at(guide, "failover-bot test-call") < secondary
    assert secondary < _at(guide, "systemctl enable --now failover-bot")


def test_guide_install_works_on_debian_12() -> None:
    guide = GUIDE.read_text()
    # Debian 12 has no asterisk package, and refuses pip outside a virtualenv.
    assert "apt-get install asterisk" not in guide
    assert not re.search(r"^\s*pip3? install", guide, re.M)
    assert "make install-host" in guide and "make wheelhouse" in guide
    # The wheel it names is the one setuptools builds (underscore, not dash).
    assert "failover-bot-*.whl" not in guide and "failover_bot-" in guide
    # The asterisk user's uid/gid must match on both nodes (/srv/pbx is shared).
    assert "same uid/gid on both nodes" in guide.lower()
    assert "contrib/systemd/asterisk.service" in guide
    assert "journalctl -u failover-bot" in guide


# What the fast profile changes (deploy/README.md, "Timing profiles"); nothing else.
FAST_ONLY = {
    ("cluster", "lease_ttl"),
    ("cluster", "renew_interval"),
    ("cluster", "drift_margin"),
    ("cluster", "fence_budget"),
    ("redis", "timeout"),
}


@pytest.mark.parametrize("node", ["a", "b"])
def test_fast_profile_differs_from_the_default_only_in_its_timings(node: str) -> None:
    default, fast = example(f"node-{node}.toml"), example(f"fast-{node}.toml")
    differ = {
        (section, key)
        for section in default.keys() | fast.keys()
        for key in (default.get(section, {}).keys() | fast.get(section, {}).keys())
        if default.get(section, {}).get(key) != fast.get(section, {}).get(key)
    }
    assert differ == FAST_ONLY, f"fast-{node}.toml differs in {sorted(differ - FAST_ONLY)}"
    header = (DEPLOY / "examples" / f"fast-{node}.toml").read_text()
    assert "Only the [cluster] lease timings and [redis] timeout differ" in header


@pytest.mark.parametrize(
    "address,says",
    [('"2001:db8::10/64"', "IPv6 floating addresses are not supported yet"),
     ('["192.0.2.10/24", "192.0.2.11/24"]', "expected a string")],
)  # fmt: skip
def test_what_the_guide_says_of_ipv6_and_several_addresses(address: str, says: str) -> None:
    from bot.config import ConfigError, parse_config

    assert says in " ".join(GUIDE.read_text().split())
    node = '[node]\nid = "a"\n[cluster]\nname = "t"\n'
    text = f'{node}[vip]\naddress = {address}\ninterface = "eth0"\n'
    with pytest.raises(ConfigError) as refused:
        parse_config(text)
    assert refused.value.problems == [("vip.address", refused.value.problems[0][1])]
    assert says in refused.value.problems[0][1]
