"""Every command and snippet of the operator's guide against the code and the files.

Extracted from deploy/README.md (and the two READMEs it sends the reader to):
each fenced block and each inline code span. Checked:

- `failover-bot VERB [SUB] --flag ...`: the verb, its sub-command and every flag
  exist in the CLI's own parser;
- configuration keys (`cluster.stop_drain_timeout`, `[vip] address`, `[test_call]
  channel = ...`): the key exists in the schema;
- files of this directory (`examples/fast-a.toml`, `asterisk/modules.conf`, `cp
  SRC DST` sources): the file is shipped;
- `make TARGET` (ours, not Asterisk's build): the Makefile has the target;
- the alert table names exactly the alerts of prometheus/alerts.yml;
- `check-config --host` lines the guide names (`OK redis`, `systemd.watchdog`)
  are checks hostcheck makes;
- systemd settings the guide tells the operator to set exist in the shipped unit.
"""

from __future__ import annotations

import argparse
import re
import shlex
from functools import cache
from pathlib import Path

import pytest

from bot.cli import build_parser
from bot.config import iter_documented_keys
from tests.deploy.conftest import REPO

DEPLOY = REPO / "deploy"
GUIDES = [DEPLOY / "README.md", DEPLOY / "drbd" / "README.md", DEPLOY / "redis" / "README.md"]
FILE_SUFFIXES = (".toml", ".conf", ".yml", ".json", ".md", ".service", ".preset", ".res", ".sh")
# Targets of Asterisk's own build (step 2), not of this project's Makefile.
ASTERISK_MAKE = {"menuselect", "install", "config", "samples", "basic-pbx"}


def code(path: Path) -> tuple[list[str], list[str]]:
    """(fenced blocks, inline spans) of a Markdown file; spans may wrap lines."""
    text = path.read_text()
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S)
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose)]
    return blocks, spans


def all_code() -> list[tuple[str, str]]:
    """(where, text) of every block line and every span."""
    out: list[tuple[str, str]] = []
    for guide in GUIDES:
        blocks, spans = code(guide)
        name = guide.relative_to(REPO).as_posix()
        for block in blocks:
            # A backslash at the end of a line continues the command.
            joined = re.sub(r"\\\n\s*", " ", block)
            out += [(f"{name} block", line) for line in joined.splitlines()]
        out += [(f"{name} span", span) for span in spans]
    return out


@cache
def _parser() -> argparse.ArgumentParser:
    return build_parser()


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def invocations() -> list[tuple[str, list[str]]]:
    """Each `failover-bot ...` command line: the words up to a shell separator."""
    found: list[tuple[str, list[str]]] = []
    for where, text in all_code():
        for match in re.finditer(r"(?:^|[\s/'\"(=])failover-bot\s+([^|;&#)`]*)", text):
            # `systemctl stop failover-bot`, `journalctl -u failover-bot -f`: the unit.
            if re.search(r"(systemctl\s+[\w-]+|-u)\s+$", text[: match.start(1) - 1 - 12]):
                continue
            rest = match.group(1).split(" && ")[0]
            try:
                words = shlex.split(rest)
            except ValueError:
                words = rest.split()
            if words and re.fullmatch(r"-?-?[a-z][a-z-]*", words[0]):
                found.append((where, words))
    return found


def test_the_guide_has_commands_to_check() -> None:
    verbs = {words[0] for _, words in invocations()}
    # The ones an operator needs; if extraction breaks, this fails instead of passing empty.
    assert {"status", "switchover", "pause", "check-config", "check", "test-call"} <= verbs


@pytest.mark.parametrize(
    "where,words", invocations(), ids=lambda v: " ".join(v) if isinstance(v, list) else v
)
def test_every_failover_bot_command_exists_with_its_flags(where: str, words: list[str]) -> None:
    parser = _parser()
    if words[0].startswith("-"):  # global options: --version, --log-format
        known = parser._option_string_actions
        assert words[0] in known, f"{where}: failover-bot {words[0]} is not an option"
        return
    verbs = _subcommands(parser)
    assert words[0] in verbs, f"{where}: no verb {words[0]!r} (verbs: {sorted(verbs)})"
    sub = verbs[words[0]]
    nested = _subcommands(sub)
    rest = words[1:]
    if nested and rest and not rest[0].startswith("-"):
        assert rest[0] in nested, f"{where}: no `{words[0]} {rest[0]}`"
        sub = nested[rest[0]]
        rest = rest[1:]
    for word in rest:
        flag = word.split("=", 1)[0]
        if flag.startswith("-"):
            assert flag in sub._option_string_actions, (
                f"{where}: `failover-bot {' '.join(words)}`: {flag} is not an option of "
                f"{words[0]} ({sorted(sub._option_string_actions)})"
            )


def _schema_keys() -> set[str]:
    return {re.sub(r"\[\d+\]", "", key) for key, _ in iter_documented_keys()}


SECTIONS = {key.split(".")[0] for key in _schema_keys()}


NOT_KEYS = {"toml", "conf", "secret", "password", "service", "token", "url", "res", "yml", "d"}


def config_keys() -> list[tuple[str, str]]:
    """Keys the guide names: `section.key` spans and `[section] key` spans."""
    out: list[tuple[str, str]] = []
    for where, text in all_code():
        if "span" not in where:
            continue
        for match in re.finditer(r"^\[(\w+)\]\s+(\w+)", text):
            out.append((where, f"{match[1]}.{match[2]}"))
        for match in re.finditer(r"(?<![\w/.-])([a-z_]+)\.([a-z_]+)(?![\w/.(-])", text):
            if match[1] in SECTIONS and match[2] not in NOT_KEYS:
                out.append((where, f"{match[1]}.{match[2]}"))
    return out


def test_the_guide_names_config_keys() -> None:
    named = {key for _, key in config_keys()}
    assert {"cluster.stop_drain_timeout", "vip.address", "test_call.channel"} <= named, named


@pytest.mark.parametrize("where,key", config_keys(), ids=lambda v: v)
def test_every_config_key_in_the_guide_exists(where: str, key: str) -> None:
    keys = _schema_keys()
    assert key in keys, f"{where}: `{key}` is not a configuration key"


def shipped_files() -> list[tuple[str, str]]:
    """Paths of this directory the guide names (relative, with a file suffix)."""
    out: list[tuple[str, str]] = []
    for where, text in all_code():
        for word in re.split(r"[\s,()]+", text):
            word = word.strip("`'\"")
            if not word.endswith(FILE_SUFFIXES) or word.startswith(("/", "$", "~", "-")):
                continue
            if "/" not in word or "*" in word or "://" in word or "=" in word:
                continue
            out.append((where, word))
    return sorted(set(out))


@pytest.mark.parametrize("where,path", shipped_files(), ids=lambda v: v)
def test_every_file_the_guide_names_is_shipped(where: str, path: str) -> None:
    guide = REPO / where.split(" ")[0]
    candidates = [guide.parent / path, DEPLOY / path, REPO / path]
    # Asterisk's source tree (step 2) and the operator's own paths are not ours.
    if path.startswith(("contrib/", "asterisk-22")):
        return
    assert any(c.exists() for c in candidates), f"{where}: {path} is not shipped"


def make_targets() -> list[tuple[str, str]]:
    out = []
    for where, text in all_code():
        if "apt-get" in text:  # the package, not a target
            continue
        for match in re.finditer(r"(?:^|[\s;&(])make\s+([a-z][\w-]*)", text):
            if match[1] not in ASTERISK_MAKE:
                out.append((where, match[1]))
    return sorted(set(out))


@pytest.mark.parametrize("where,target", make_targets(), ids=lambda v: v)
def test_every_make_target_exists(where: str, target: str) -> None:
    makefile = (REPO / "Makefile").read_text()
    assert re.search(rf"^{re.escape(target)}:", makefile, re.M), f"{where}: no `make {target}`"


def test_the_alert_table_names_every_shipped_alert() -> None:
    rules = set(re.findall(r"alert:\s*(\w+)", (DEPLOY / "prometheus" / "alerts.yml").read_text()))
    guide = (DEPLOY / "README.md").read_text()
    table = set(re.findall(r"^\| `(FailoverBot\w+)` \|", guide, re.M))
    assert table == rules, f"missing in the guide: {rules - table}; not rules: {table - rules}"


def test_hostcheck_lines_the_guide_names_exist() -> None:
    source = (REPO / "bot" / "hostcheck.py").read_text()
    guide = (DEPLOY / "README.md").read_text()
    for check in re.findall(r"`(systemd\.\w+)`", guide):
        assert f'"{check}"' in source, f"the guide names the check {check}; hostcheck has none"
    assert "OK redis" in guide and 'Finding("redis"' in source


def test_systemd_settings_the_guide_names_are_in_the_unit() -> None:
    unit = (DEPLOY / "systemd" / "failover-bot.service").read_text()
    guide = (DEPLOY / "README.md").read_text()
    for setting in set(re.findall(r"`([A-Z][A-Za-z]+Sec|Nice|KillMode|Type)=", guide)):
        assert re.search(rf"^{setting}=", unit, re.M), f"the guide sets {setting}; the unit not"


def test_the_binary_paths_in_the_guide_are_the_installed_ones() -> None:
    script = (DEPLOY / "install-host.sh").read_text()
    defaults = dict(re.findall(r"^(\w+)=\$\{\w+:-([^}]+)\}$", script, re.M))
    installed = {f"{defaults['BINDIR']}/failover-bot", f"{defaults['PREFIX']}/bin/failover-bot"}
    for guide in GUIDES:
        for path in re.findall(r"(/[\w./-]*/failover-bot)(?![\w.-])", guide.read_text()):
            if "/bin/" in path:
                assert path in installed, f"{guide.name}: {path} (install-host puts {installed})"


def test_the_example_prometheus_loads_the_rules_file_the_guide_installs() -> None:
    example = (DEPLOY / "prometheus" / "prometheus.example.yml").read_text()
    (rules,) = re.findall(r"^\s*-\s*(/\S+)", example.split("rule_files:")[1], re.M)[:1]
    guide = (DEPLOY / "README.md").read_text()
    assert re.search(rf"install .*prometheus/alerts\.yml {re.escape(rules)}", guide), rules
