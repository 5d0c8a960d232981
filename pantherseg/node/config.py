"""The DICOM node's settings: :class:`NodeConfig`, from ``serve-dicom`` flags and/or ``--node-config node.json``.

The file has the same keys as the flags (``--series-timeout`` is ``series_timeout_s``, see :data:`FLAG_KEYS`);
a flag given on the command line wins over the file. The file comes from whoever runs the node and is read
as untrusted (``pantherseg.json_files.read_json_object``); every key is checked and a bad one is refused with one
ConfigError line naming the key, the rule and the value found, before anything listens or loads.

    {
      "ae_title": "PANTHERSEG", "port": 11112, "bind": "0.0.0.0",
      "allow_ae": ["MRSCANNER1", "PACS@10.0.0.5"],
      "send_to": ["PACS@10.0.0.5:104?outputs=seg,sr", "TPS@10.0.0.9:11112?outputs=rtstruct"],
      "spool": "/var/lib/pantherseg/spool", "task": "t2", "series_timeout_s": 10,
      "outputs": ["dicom-seg", "rtstruct"]
    }
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from pantherseg.errors import ConfigError
from pantherseg.io.formats import DICOM_FORMATS

AE_TITLE_MAX = 16
# Result formats the node can send: the DICOM ones (pantherseg.io.formats).
NODE_OUTPUTS = DICOM_FORMATS
# The Destination kinds (pantherseg.node.destinations) each output format goes to.
OUTPUT_KIND = {"dicom-seg": "seg", "rtstruct": "rtstruct", "sr": "sr"}
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
GIB = 1 << 30


@dataclass(frozen=True)
class AllowedCaller:
    """One allow-list entry: a calling AE title, and optionally the only host it may call from."""

    ae_title: str
    host: str | None = None

    def matches(self, ae_title: str, address: str, host_addresses: frozenset[str] | None = None) -> bool:
        """``host_addresses``: what ``host`` resolves to (the service resolves names once, at start)."""
        if ae_title.strip() != self.ae_title:
            return False
        if self.host is None:
            return True
        return address in (host_addresses if host_addresses is not None else {self.host})

    def text(self) -> str:
        return self.ae_title if self.host is None else f"{self.ae_title}@{self.host}"


@dataclass(frozen=True)
class NodeConfig:
    """Everything ``pantherseg serve-dicom`` runs with; see docs/dicom-node.md for each key."""

    spool: Path
    allow_ae: tuple[AllowedCaller, ...]
    send_to: tuple = ()  # pantherseg.node.destinations.Destination
    ae_title: str = "PANTHERSEG"
    port: int = 11112
    bind: str = "0.0.0.0"
    task: str = "t1"
    series_timeout_s: float = 10.0
    complete_on_release: bool = True
    outputs: tuple[str, ...] = ("dicom-seg", "rtstruct")
    weights: Path | None = None
    config: Path | None = None
    device: str = "auto"
    time_budget_s: float | None = None
    roi_name: str | None = None
    max_instances_per_association: int = 10_000
    max_series_bytes: int = 4 * GIB
    max_disk_use_percent: float = 90.0
    min_free_bytes: int = 1 * GIB
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    retries: int = 5
    backoff_s: float = 2.0
    backoff_max_s: float = 300.0
    shutdown_grace_s: float = 30.0
    keep_received: bool = False
    source: str = field(default="flags", compare=False)

    def but(self, **changes) -> "NodeConfig":
        return dataclasses.replace(self, **changes)

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def allows(self, ae_title: str, address: str, resolved: Mapping[str, frozenset[str]] | None = None) -> bool:
        """Whether a peer calling as ``ae_title`` from ``address`` may associate."""
        resolved = resolved or {}
        return any(entry.matches(ae_title, address, resolved.get(entry.host)) for entry in self.allow_ae)

    def to_json(self) -> dict[str, Any]:
        """The file form (what ``node-status`` prints and the docs' sample is checked against)."""
        data: dict[str, Any] = {}
        for item in dataclasses.fields(self):
            if item.name == "source":
                continue
            value = getattr(self, item.name)
            if item.name == "allow_ae":
                value = [entry.text() for entry in value]
            elif item.name == "send_to":
                value = [destination.text() for destination in value]
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, float) and math.isinf(value):
                value = None
            data[item.name] = value
        return data


KEYS = tuple(item.name for item in dataclasses.fields(NodeConfig) if item.name != "source")
# serve-dicom flag -> key, where they differ from "--" + key with '_' as '-'.
FLAG_KEYS = {
    "series_timeout": "series_timeout_s",
    "backoff": "backoff_s",
    "backoff_max": "backoff_max_s",
    "shutdown_grace": "shutdown_grace_s",
    "time_budget": "time_budget_s",
}


def load_node_config(path: Path | str | None = None, overrides: Mapping[str, Any] | None = None) -> NodeConfig:
    """The file's keys (if ``path``), then ``overrides`` (the flags given, None meaning not given), checked."""
    raw: dict[str, Any] = {}
    source = "flags"
    if path is not None:
        from pantherseg.json_files import read_json_object

        raw = dict(read_json_object(path, error=ConfigError, what="Node config"))
        source = str(path)
        unknown = sorted(set(raw) - set(KEYS))
        if unknown:
            raise ConfigError(
                f"Node config {path}: unknown key(s) {', '.join(map(repr, unknown))}; "
                f"expected some of {', '.join(KEYS)}."
            )
    for key, value in (overrides or {}).items():
        if value is not None:
            raw[key] = value
    return parse_node_config(raw, source=source)


def parse_node_config(raw: Mapping[str, Any], *, source: str = "flags") -> NodeConfig:
    where = f" ({source})" if source != "flags" else ""

    def fail(key: str, rule: str, value: Any) -> ConfigError:
        return ConfigError(f"Node config key '{key}' must be {rule}, found {_shown(value)}{where}.")

    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ConfigError(
            f"Node config: unknown key(s) {', '.join(map(repr, unknown))}{where}; expected some of {', '.join(KEYS)}."
        )
    for required in ("spool", "allow_ae"):
        if raw.get(required) in (None, [], ()):
            flag = "--" + required.replace("_", "-")
            raise ConfigError(
                f"Node config key '{required}' is required ({flag} or \"{required}\" in node.json): "
                f"{_REQUIRED_WHY[required]}{where}."
            )
    values: dict[str, Any] = {"source": source}
    for key, value in raw.items():
        values[key] = _PARSERS[key](key, value, fail)
    config = NodeConfig(**values)
    _check_together(config, fail)
    return config


_REQUIRED_WHY = {
    "spool": "the folder where received instances, jobs and the journal are kept",
    "allow_ae": "the calling AE titles (AE or AE@HOST) that may send; nobody else is accepted",
}


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _ae_title(key, value, fail) -> str:
    if (
        not isinstance(value, str)
        or not value.strip(" ")
        or len(value) > AE_TITLE_MAX
        or value != value.strip(" ")
        or any(c == "\\" or not 32 <= ord(c) < 127 for c in value)
    ):
        raise fail(
            key, f"an AE title of 1-{AE_TITLE_MAX} ASCII characters without backslash or leading/trailing spaces", value
        )
    return value


def _host(key, value, fail) -> str:
    if not isinstance(value, str) or not _is_host(value):
        raise fail(key, "an IP address or a DNS name", value)
    return value


def _is_host(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        labels = text.split(".")
        return 0 < len(text) <= 253 and all(_HOST_LABEL.match(label) for label in labels) and not labels[-1].isdigit()


def _allow_ae(key, value, fail) -> tuple[AllowedCaller, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise fail(key, "a non-empty list of AE or AE@HOST entries", value)
    entries = []
    for item in value:
        if not isinstance(item, str):
            raise fail(key, "a list of AE or AE@HOST strings", item)
        title, at, host = item.rpartition("@") if "@" in item else (item, "", None)
        _ae_title(key, title, lambda k, rule, v, item=item: fail(k, f"AE or AE@HOST with {rule}", item))
        if at and (not host or not _is_host(host)):
            raise fail(key, "AE or AE@HOST with HOST an IP address or a DNS name", item)
        entries.append(AllowedCaller(title, host or None))
    return tuple(dict.fromkeys(entries))


def _send_to(key, value, fail) -> tuple:
    from pantherseg.node.destinations import load_destination

    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise fail(key, "a list of destinations (AE@HOST:PORT or a DICOMweb URL)", value)
    destinations = []
    for item in value:
        try:
            destinations.append(load_destination(item))
        except ConfigError as error:
            raise ConfigError(f"Node config key '{key}': {error}") from None
    return tuple(destinations)


def _path(key, value, fail) -> Path:
    if not isinstance(value, (str, Path)) or not str(value).strip() or "\0" in str(value):
        raise fail(key, "a path", value)
    return Path(value)


def _optional_path(key, value, fail) -> Path | None:
    return None if value is None else _path(key, value, fail)


def _choice(*choices):
    def parse(key, value, fail):
        if value not in choices:
            raise fail(key, f"one of {', '.join(choices)}", value)
        return value

    return parse


def _task(key, value, fail) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", value):
        raise fail(key, "a task name of the ensemble config (t1 or t2)", value)
    return value


def _device(key, value, fail) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", value):
        raise fail(key, "auto, cpu or cuda[:N]", value)
    return value


def _number(low: float, high: float = math.inf, *, integer: bool = False, low_open: bool = False):
    def parse(key, value, fail):
        kind = "an integer" if integer else "a number"
        bounds = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
        if ok and isinstance(value, float) and math.isnan(value):
            ok = False
        if not ok or value < low or value > high or (low_open and value == low):
            raise fail(key, f"{kind} in {bounds}", value)
        return value

    return parse


def _optional_budget(key, value, fail) -> float | None:
    if value is None:
        return None
    return _number(0, low_open=True)(key, value, fail)


def _boolean(key, value, fail) -> bool:
    if not isinstance(value, bool):
        raise fail(key, "true or false", value)
    return value


def _outputs(key, value, fail) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if (
        not isinstance(value, (list, tuple))
        or not value
        or len(set(value)) != len(value)
        or any(item not in NODE_OUTPUTS for item in value)
    ):
        raise fail(key, f"a non-empty list of distinct formats among {', '.join(NODE_OUTPUTS)}", value)
    return tuple(value)


def _optional_name(key, value, fail) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise fail(key, "a ROI name of 1-64 characters", value)
    return value


_PARSERS = {
    "spool": _path,
    "allow_ae": _allow_ae,
    "send_to": _send_to,
    "ae_title": _ae_title,
    "port": _number(1, 65535, integer=True),
    "bind": _host,
    "task": _task,
    "series_timeout_s": _number(0, 86400, low_open=True),
    "complete_on_release": _boolean,
    "outputs": _outputs,
    "weights": _optional_path,
    "config": _optional_path,
    "device": _device,
    "time_budget_s": _optional_budget,
    "roi_name": _optional_name,
    "max_instances_per_association": _number(1, 10_000_000, integer=True),
    "max_series_bytes": _number(1, 1 << 50, integer=True),
    "max_disk_use_percent": _number(1, 100),
    "min_free_bytes": _number(0, 1 << 50, integer=True),
    "tls_cert": _optional_path,
    "tls_key": _optional_path,
    "tls_ca": _optional_path,
    "retries": _number(0, 100, integer=True),
    "backoff_s": _number(0, 3600),
    "backoff_max_s": _number(0, 86400),
    "shutdown_grace_s": _number(0, 3600),
    "keep_received": _boolean,
}


def _check_together(config: NodeConfig, fail) -> None:
    """Rules between keys: TLS files come in pairs and exist; every output has somewhere to go."""
    if (config.tls_cert is None) != (config.tls_key is None):
        raise ConfigError(
            "Node config keys 'tls_cert' and 'tls_key' go together (the node's certificate and its "
            f"private key), found only {'tls_cert' if config.tls_cert else 'tls_key'}."
        )
    if config.tls_ca is not None and config.tls_cert is None:
        raise ConfigError(
            "Node config key 'tls_ca' (the CA that signs callers' certificates) needs 'tls_cert' "
            "and 'tls_key' (TLS for the node itself)."
        )
    for key in ("tls_cert", "tls_key", "tls_ca"):
        value = getattr(config, key)
        if value is not None and not value.is_file():
            raise fail(key, "an existing PEM file", str(value))
    for key in ("weights", "config"):
        value = getattr(config, key)
        if value is not None and not value.exists():
            raise fail(key, "an existing " + ("folder" if key == "weights" else "file"), str(value))
    if config.backoff_max_s < config.backoff_s:
        raise fail("backoff_max_s", f"at least backoff_s ({config.backoff_s:g})", config.backoff_max_s)
    if not config.send_to:
        raise ConfigError(
            "Node config key 'send_to' needs at least one destination (AE@HOST:PORT or a DICOMweb "
            "URL): the results must go somewhere."
        )
    for output in config.outputs:
        kind = OUTPUT_KIND[output]
        if not any(destination.accepts(kind) for destination in config.send_to):
            raise ConfigError(
                f"Node config: output '{output}' goes to no destination (each send_to entry's "
                f"outputs= leaves out '{kind}'); add it to one or drop it from 'outputs'."
            )
