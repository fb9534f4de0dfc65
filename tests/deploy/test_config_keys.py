"""Configuration keys for deployment: API reachability, tls_ca_file from env:, drain on stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, parse_config

PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def text(tmp_path: Path, *, listen: str, peer: str, redis: str = "") -> str:
    (tmp_path / "s").write_text("secret\n")
    return f"""
[node]
id = "a"
[cluster]
name = "lab"
peers = [{{ id = "b", api = "{peer}" }}]
secret_file = "s"
[redis]
{redis}
[api]
listen = "{listen}"
"""


def problems(source: str, base: Path) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(source, base)
    return dict(info.value.problems)


def test_loopback_api_with_a_remote_peer_is_refused(tmp_path: Path) -> None:
    found = problems(
        text(tmp_path, listen="127.0.0.1:9440", peer="http://10.20.0.12:9440"), tmp_path
    )
    assert "cannot reach" in found["api.listen"]
    # A lab pair on one host, or a LAN address: fine.
    parse_config(text(tmp_path, listen="127.0.0.1:9441", peer="http://127.0.0.1:9442"), tmp_path)
    parse_config(text(tmp_path, listen="10.20.0.11:9440", peer="http://10.20.0.12:9440"), tmp_path)


def test_tls_ca_file_takes_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    peer = "http://127.0.0.1:9442"
    monkeypatch.setenv("REDIS_CA", PEM)
    cfg = parse_config(
        text(tmp_path, listen="127.0.0.1:1", peer=peer, redis='tls_ca_file = "env:REDIS_CA"'),
        tmp_path,
    )
    assert cfg.redis.tls_ca_file == "env:REDIS_CA"
    monkeypatch.setenv("REDIS_CA", "not a certificate")
    found = problems(
        text(tmp_path, listen="127.0.0.1:1", peer=peer, redis='tls_ca_file = "env:REDIS_CA"'),
        tmp_path,
    )
    assert "no PEM certificate" in found["redis.tls_ca_file"]
    found = problems(
        text(tmp_path, listen="127.0.0.1:1", peer=peer, redis='tls_ca_file = "env:UNSET_CA_X"'),
        tmp_path,
    )
    assert "UNSET_CA_X is not set" in found["redis.tls_ca_file"]


def test_stop_drain_timeout_and_sentinel_password(tmp_path: Path) -> None:
    (tmp_path / "sp").write_text("sentinel-secret\n")
    source = text(
        tmp_path,
        listen="127.0.0.1:1",
        peer="http://127.0.0.1:2",
        redis='sentinels = ["10.20.5.1:26379"]\nsentinel_password_file = "sp"',
    )
    cfg = parse_config(source, tmp_path)
    assert cfg.cluster.stop_drain_timeout == 30.0
    assert cfg.redis.sentinel_password_file is not None
    assert cfg.redis.sentinel_password_file.reveal() == "sentinel-secret"
    assert "sentinel-secret" not in repr(cfg)
    source = source.replace('name = "lab"', 'name = "lab"\nstop_drain_timeout = "2m"')
    assert parse_config(source, tmp_path).cluster.stop_drain_timeout == 120.0
