"""deploy/asterisk: the AMI user's rights, the test-call dialplan, span alarm reporting."""

from __future__ import annotations

import re

from bot import config
from tests.deploy.conftest import REPO

ASTERISK_DIR = REPO / "deploy" / "asterisk"


def sections(text: str) -> dict[str, dict[str, list[str]]]:
    """A small reader of Asterisk's INI dialect (`=` and `=>`, `;` comments)."""
    out: dict[str, dict[str, list[str]]] = {}
    current = out.setdefault("", {})
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if match := re.fullmatch(r"\[([^\]]+)\]", line):
            current = out.setdefault(match[1], {})
        elif "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            current.setdefault(key.strip(), []).append(value.lstrip(">").strip())
    return out


def test_ami_user_has_only_what_the_bot_needs() -> None:
    conf = sections((ASTERISK_DIR / "manager.conf").read_text())
    assert conf["general"]["bindaddr"] == ["127.0.0.1"]
    user = conf["failover"]
    read = set(user["read"][0].split(","))
    write = set(user["write"][0].split(","))
    assert read == {"system", "call"}
    assert write == {"originate", "reporting"}
    assert "secret" not in user, "the secret is included from a root-only file"
    assert "#include" in (ASTERISK_DIR / "manager.conf").read_text()


def test_test_call_dialplan_answers_and_disables_cdrs() -> None:
    defaults = config.TestCallConfig()
    dialplan = sections((ASTERISK_DIR / "extensions_failover.conf").read_text())
    assert defaults.context is not None and defaults.exten is not None
    context = dialplan[defaults.context]
    lines = context["exten"] + context.get("same", [])
    # The originate target (Local/100@test) answers; the leg after answer exists.
    callee = defaults.channel.split("/", 1)[1].split("@")[0]
    assert any(line.startswith(f"{callee},1,Set(CDR_PROP(disable)=1)") for line in lines)
    assert any(line.startswith(f"{defaults.exten},1,Set(CDR_PROP(disable)=1)") for line in lines)
    assert "n,Answer()" in lines
    # CDRs are disabled before the answer.
    text = (ASTERISK_DIR / "extensions_failover.conf").read_text()
    assert text.index("CDR_PROP(disable)=1") < text.index("Answer()")


def test_chan_dahdi_reports_span_alarms() -> None:
    conf = sections((ASTERISK_DIR / "chan_dahdi.conf").read_text())
    assert conf["channels"]["reportalarms"] == ["all"]
