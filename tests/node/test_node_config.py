"""pantherseg.node.config: flags and node.json with the same keys, flags first, one line per bad key."""

from __future__ import annotations

import json
import math

import pytest

from pantherseg.cli import build_parser
from pantherseg.errors import ConfigError
from pantherseg.node import config as node_config
from pantherseg.node.commands import node_config_from_args
from pantherseg.node.config import KEYS, AllowedCaller, load_node_config, parse_node_config

BASE = {"spool": "/tmp/spool", "allow_ae": ["SCANNER"], "send_to": ["PACS@127.0.0.1:104"]}


def _args(*flags):
    return build_parser().parse_args(["serve-dicom", *flags])


def test_defaults_and_every_key_has_a_parser():
    config = parse_node_config(BASE)
    assert (config.ae_title, config.port, config.bind, config.task) == ("PANTHERSEG", 11112, "0.0.0.0", "t1")
    assert config.outputs == ("dicom-seg", "rtstruct") and config.complete_on_release
    assert config.allow_ae == (AllowedCaller("SCANNER"),)
    assert config.send_to[0].describe() == "C-STORE to PACS@127.0.0.1:104 (all outputs)"
    assert set(node_config._PARSERS) == set(KEYS)


def test_the_file_and_the_flags_have_the_same_keys_and_flags_win(tmp_path):
    path = tmp_path / "node.json"
    path.write_text(
        json.dumps(
            {
                **BASE,
                "ae_title": "FROMFILE",
                "port": 104,
                "series_timeout_s": 7,
                "allow_ae": ["A", "B@127.0.0.1"],
                "task": "t2",
                "retries": 1,
            }
        )
    )
    config = node_config_from_args(
        _args(
            "--node-config",
            str(path),
            "--port",
            "11113",
            "--allow-ae",
            "C",
            "--series-timeout",
            "2.5",
            "--keep-received",
        )
    )
    assert config.ae_title == "FROMFILE" and config.task == "t2" and config.retries == 1  # from the file
    assert config.port == 11113 and config.series_timeout_s == 2.5 and config.keep_received  # the flags'
    assert [entry.text() for entry in config.allow_ae] == ["C"]  # a list flag replaces the file's list
    assert config.source == str(path)
    # Every flag's destination is a key; a file written from to_json() reads back equal.
    round_trip = tmp_path / "again.json"
    round_trip.write_text(json.dumps(config.to_json()))
    assert load_node_config(round_trip) == config


def test_flags_alone_make_a_config():
    config = node_config_from_args(
        _args(
            "--spool",
            "/tmp/s",
            "--allow-ae",
            "MR1",
            "--allow-ae",
            "PACS@10.0.0.5",
            "--send-to",
            "PACS@10.0.0.5:104?outputs=seg",
            "--send-to",
            "TPS@10.0.0.9:11112?outputs=rtstruct",
            "--no-complete-on-release",
        )
    )
    assert [e.text() for e in config.allow_ae] == ["MR1", "PACS@10.0.0.5"]
    assert [d.outputs for d in config.send_to] == [("seg",), ("rtstruct",)]
    assert config.complete_on_release is False
    assert config.allows("MR1", "192.168.1.7") and config.allows("PACS", "10.0.0.5")
    assert not config.allows("PACS", "10.0.0.6") and not config.allows("OTHER", "10.0.0.5")


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("port", 70000, "Node config key 'port' must be an integer in [1, 65535], found 70000"),
        ("port", "104", "Node config key 'port' must be an integer in [1, 65535], found '104'"),
        ("port", True, "found True"),
        ("ae_title", "A" * 17, "Node config key 'ae_title' must be an AE title of 1-16 ASCII characters"),
        ("ae_title", "BAD\\AE", "without backslash"),
        ("allow_ae", ["OK", "X@"], "Node config key 'allow_ae' must be AE or AE@HOST with HOST an IP address"),
        ("allow_ae", ["OK", 5], "a list of AE or AE@HOST strings, found 5"),
        ("send_to", ["nonsense"], "Node config key 'send_to': Destination 'nonsense': expected AE@HOST:PORT"),
        ("series_timeout_s", 0, "Node config key 'series_timeout_s' must be a number in (0, 86400], found 0"),
        ("series_timeout_s", math.nan, "found nan"),
        ("outputs", ["mha"], "Node config key 'outputs' must be a non-empty list of distinct formats"),
        ("outputs", ["rtstruct", "rtstruct"], "distinct formats"),
        ("bind", "no spaces allowed", "Node config key 'bind' must be an IP address or a DNS name"),
        ("device", "gpu", "Node config key 'device' must be auto, cpu or cuda[:N], found 'gpu'"),
        ("max_disk_use_percent", 101, "must be a number in [1, 100], found 101"),
        ("retries", -1, "Node config key 'retries' must be an integer in [0, 100], found -1"),
        ("keep_received", "yes", "Node config key 'keep_received' must be true or false, found 'yes'"),
        (
            "weights",
            "/no/such/weights",
            "Node config key 'weights' must be an existing folder, found '/no/such/weights'",
        ),
        ("tls_cert", "/no/cert.pem", "'tls_cert' and 'tls_key' go together"),
        ("backoff_max_s", 1, "Node config key 'backoff_max_s' must be at least backoff_s (2), found 1"),
    ],
)
def test_each_bad_key_is_one_line_naming_key_rule_and_value(key, value, expected):
    with pytest.raises(ConfigError) as caught:
        parse_node_config({**BASE, key: value})
    message = str(caught.value)
    assert expected in message and "\n" not in message


def test_required_keys_unknown_keys_and_outputs_without_destination(tmp_path):
    with pytest.raises(ConfigError, match=r"'spool' is required \(--spool"):
        parse_node_config({"allow_ae": ["A"], "send_to": ["P@h:1"]})
    with pytest.raises(ConfigError, match="'allow_ae' is required"):
        parse_node_config({"spool": "/s", "send_to": ["P@h:1"]})
    with pytest.raises(ConfigError, match="'send_to' needs at least one destination"):
        parse_node_config({"spool": "/s", "allow_ae": ["A"]})
    with pytest.raises(ConfigError, match="output 'rtstruct' goes to no destination"):
        parse_node_config({**BASE, "send_to": ["PACS@127.0.0.1:104?outputs=seg"]})
    path = tmp_path / "node.json"
    path.write_text(json.dumps({**BASE, "aetitle": "typo"}))
    with pytest.raises(ConfigError, match=r"Node config .*node.json: unknown key\(s\) 'aetitle'; expected some of"):
        load_node_config(path)


def test_the_file_is_read_as_untrusted(tmp_path):
    for content, expected in [(b"[1, 2]", "Node config"), (b"{not json", "Node config"), (b"\xff\xfe", "Node config")]:
        path = tmp_path / "node.json"
        path.write_bytes(content)
        with pytest.raises(ConfigError, match=expected):
            load_node_config(path)
    with pytest.raises(ConfigError, match="Node config not found"):
        load_node_config(tmp_path / "missing.json")
    with pytest.raises(ConfigError, match="is a folder"):
        load_node_config(tmp_path)


def test_tls_files_must_exist_and_pair(tmp_path):
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("x")
    key.write_text("y")
    config = parse_node_config({**BASE, "tls_cert": str(cert), "tls_key": str(key)})
    assert config.tls and config.tls_ca is None
    with pytest.raises(ConfigError, match="'tls_ca' .* needs 'tls_cert' and 'tls_key'"):
        parse_node_config({**BASE, "tls_ca": str(cert)})
    with pytest.raises(ConfigError, match="'tls_key' must be an existing PEM file"):
        parse_node_config({**BASE, "tls_cert": str(cert), "tls_key": str(tmp_path / "none.pem")})


def test_serve_dicom_refuses_a_bad_config_with_exit_code_4_before_listening(tmp_path, capsys):
    from pantherseg.cli import main

    code = main(
        [
            "serve-dicom",
            "--spool",
            str(tmp_path / "spool"),
            "--allow-ae",
            "A",
            "--send-to",
            "P@127.0.0.1:1",
            "--port",
            "0",
        ]
    )
    assert code == 4
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "pantherseg error: Node config key 'port' must be an integer in [1, 65535], found 0."
    )
    assert not (tmp_path / "spool").exists()


def test_the_sample_node_json_in_the_docs_is_valid():
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "dicom-node.md").read_text()
    (sample,) = re.findall(r"```json\n(.*?)```", text, flags=re.S)
    config = parse_node_config(json.loads(sample))
    assert config.task == "t2" and [d.outputs for d in config.send_to] == [("seg", "rtstruct"), ("rtstruct",)]
    assert set(json.loads(sample)) <= set(KEYS)
