"""Where the DICOM node sends its results: one ``Destination`` per ``--send-to`` flag or ``send_to`` entry.

Two kinds, written as one string each (the command line) or as a JSON object (``node.json``):

- DIMSE C-STORE to a DICOM node: ``AE@HOST:PORT``, e.g. ``PACS@10.0.0.5:104``, ``TPS@planning.local:11112``,
  ``ORTHANC@[::1]:4242``. AE is the called AE title (1-16 characters of the DICOM default repertoire, no
  backslash, no leading or trailing space); HOST a DNS name, an IPv4 address or a bracketed IPv6 address;
  PORT 1-65535.
- DICOMweb STOW-RS to a service root: ``https://HOST[:PORT]/PATH`` or ``http://...``, e.g.
  ``https://pacs.example.org/dicom-web``. The instances are POSTed to ``<root>/studies``. No user name or
  password in the URL, no fragment, and no query other than the options below.

Options follow a ``?`` as ``key=value`` pairs joined by ``&`` (the same for both kinds):

- ``outputs=seg,rtstruct,sr``: which result kinds go there (any of ``seg``, ``rtstruct``, ``sr``, each at most
  once). Without it, every kind goes there.
- ``tls=yes|no`` (DIMSE only; default ``no``): the association runs over TLS (DICOM Part 15, B.1). For
  DICOMweb the scheme says it: ``https`` is TLS.
- ``ca=PATH``: a PEM file of trusted CA certificates for TLS (DIMSE with ``tls=yes``, or an ``https`` URL)
  instead of the system's store.

    PACS@10.0.0.5:104?outputs=seg,sr
    TPS@10.0.0.9:11112?outputs=rtstruct&tls=yes&ca=/etc/pantherseg/tps-ca.pem
    https://pacs.example.org/dicom-web?outputs=seg

The JSON form is ``Destination.to_json()``: an object with exactly the dataclass's fields (``kind``,
``ae_title``, ``host``, ``port``, ``url``, ``outputs``, ``tls``, ``ca_file``); ``load_destination`` reads
either form. A JSON DICOMweb entry needs ``kind`` and ``url`` (``host``, ``port`` and ``tls`` follow from the
URL; when given they must agree with it). ``outputs`` null means every kind.

Every refusal is one ``ConfigError`` line naming the destination, what was expected and what was found.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import urlsplit

from pantherseg.errors import ConfigError

OUTPUT_KINDS = ("seg", "rtstruct", "sr")
KINDS = ("dimse", "dicomweb")
OPTION_KEYS = ("outputs", "tls", "ca")
AE_TITLE_MAX = 16
_HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_DIMSE = re.compile(r"^(?P<ae>[^@]*)@(?P<host>\[[^\]]*\]|[^:\[\]@]*):(?P<port>[^:]*)$")
_YES_NO = {"yes": True, "no": False}


@dataclass(frozen=True)
class Destination:
    """One place results go. Built by ``parse_destination``/``load_destination``, which validate it.

    ``kind`` "dimse": ``ae_title``, ``host``, ``port`` name the C-STORE SCP, ``url`` is None.
    ``kind`` "dicomweb": ``url`` is the DICOMweb service root (no trailing slash); ``host`` and ``port``
    are the URL's (port 443/80 when the URL has none), ``ae_title`` is None, ``tls`` is True for https.
    ``outputs``: the result kinds sent there, in ``OUTPUT_KINDS`` order, or None for all.
    ``ca_file``: a PEM bundle of trusted CAs for TLS, or None for the system's store."""

    kind: str
    host: str
    port: int
    ae_title: str | None = None
    url: str | None = None
    outputs: tuple[str, ...] | None = None
    tls: bool = False
    ca_file: str | None = None

    def __post_init__(self):
        _check_fields(self)

    def accepts(self, output_kind: str) -> bool:
        """Whether a result of this kind ("seg", "rtstruct", "sr") goes to this destination."""
        if output_kind not in OUTPUT_KINDS:
            raise ValueError(f"output kind must be one of {', '.join(OUTPUT_KINDS)}, not {output_kind!r}")
        return self.outputs is None or output_kind in self.outputs

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``C-STORE to PACS@10.0.0.5:104 (seg, sr)``."""
        which = "all outputs" if self.outputs is None else ", ".join(self.outputs)
        if self.kind == "dimse":
            return f"C-STORE to {self.ae_title}@{_host_text(self.host)}:{self.port}{' over TLS' if self.tls else ''} ({which})"
        return f"STOW-RS to {self.url} ({which})"

    def text(self) -> str:
        """The string form, which ``parse_destination`` reads back to an equal Destination."""
        options = []
        if self.outputs is not None:
            options.append("outputs=" + ",".join(self.outputs))
        if self.kind == "dimse" and self.tls:
            options.append("tls=yes")
        if self.ca_file is not None:
            options.append(f"ca={self.ca_file}")
        base = f"{self.ae_title}@{_host_text(self.host)}:{self.port}" if self.kind == "dimse" else self.url
        return base + ("?" + "&".join(options) if options else "")

    def slug(self) -> str:
        """A file-name-safe name for this destination (dead-letter folders), distinct per AE/host/port/URL."""
        base = f"{self.ae_title}@{self.host}_{self.port}" if self.kind == "dimse" else self.url.split("://", 1)[1]
        return re.sub(r"[^A-Za-z0-9@._-]+", "_", base).strip("_.") or "destination"

    def to_json(self) -> dict[str, Any]:
        """The JSON form: every field, ``outputs`` as a list (or null)."""
        data = {field.name: getattr(self, field.name) for field in fields(self)}
        data["outputs"] = None if self.outputs is None else list(self.outputs)
        return data


def parse_destination(text: str) -> Destination:
    """``AE@HOST:PORT[?options]`` or ``http(s)://HOST[:PORT]/PATH[?options]`` -> a validated Destination."""
    if not isinstance(text, str):
        raise ConfigError(f"A destination must be a string like PACS@10.0.0.5:104, not {type(text).__name__}")
    if text != text.strip() or not text or any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ConfigError(
            f"Destination {text!r}: expected AE@HOST:PORT or a DICOMweb URL without blanks or control characters"
        )
    base, _, query = text.partition("?")
    options = _options(text, query)
    if "://" in base:
        return _dicomweb(text, base, options)
    return _dimse(text, base, options)


def load_destination(value: str | Mapping[str, Any]) -> Destination:
    """A destination from ``node.json``: its string form or its JSON object form (``Destination.to_json``)."""
    if isinstance(value, str):
        return parse_destination(value)
    if not isinstance(value, Mapping):
        raise ConfigError(f"A destination must be a string or an object, not {type(value).__name__}: {value!r}")
    known = {field.name for field in fields(Destination)}
    unknown = sorted(set(value) - known)
    if unknown:
        raise ConfigError(
            f"Destination {dict(value)!r}: unknown key(s) {', '.join(map(repr, unknown))}; expected some of {', '.join(sorted(known))}"
        )
    kind = value.get("kind")
    if kind == "dicomweb":
        return _dicomweb_from_json(value)
    if kind == "dimse":
        outputs = value.get("outputs")
        return Destination(
            kind="dimse",
            ae_title=value.get("ae_title"),
            host=value.get("host"),
            port=value.get("port"),
            url=value.get("url"),
            outputs=_outputs_from_json(value, outputs),
            tls=value.get("tls", False),
            ca_file=value.get("ca_file"),
        )
    raise ConfigError(f"Destination {dict(value)!r}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")


def _options(text: str, query: str) -> dict[str, str]:
    if not query:
        if text.endswith("?"):
            raise ConfigError(f"Destination {text!r}: nothing after '?'; expected options like outputs=seg,sr")
        return {}
    options: dict[str, str] = {}
    for pair in query.split("&"):
        key, sep, value = pair.partition("=")
        if not sep or not value:
            raise ConfigError(
                f"Destination {text!r}: option {pair!r} is not key=value (keys: {', '.join(OPTION_KEYS)})"
            )
        if key not in OPTION_KEYS:
            raise ConfigError(f"Destination {text!r}: unknown option {key!r}; expected {', '.join(OPTION_KEYS)}")
        if key in options:
            raise ConfigError(f"Destination {text!r}: option {key!r} given twice")
        options[key] = value
    return options


def _dimse(text: str, base: str, options: dict[str, str]) -> Destination:
    match = _DIMSE.match(base)
    if not match:
        raise ConfigError(
            f"Destination {text!r}: expected AE@HOST:PORT (e.g. PACS@10.0.0.5:104) or an http(s):// DICOMweb URL"
        )
    host = match["host"][1:-1] if match["host"].startswith("[") else match["host"]
    tls = options.get("tls", "no")
    if tls not in _YES_NO:
        raise ConfigError(f"Destination {text!r}: tls must be yes or no, not {tls!r}")
    return Destination(
        kind="dimse",
        ae_title=match["ae"],
        host=host,
        port=_port(text, match["port"]),
        outputs=_outputs(text, options.get("outputs")),
        tls=_YES_NO[tls],
        ca_file=options.get("ca"),
    )


def _dicomweb(text: str, base: str, options: dict[str, str]) -> Destination:
    if "tls" in options:
        raise ConfigError(
            f"Destination {text!r}: the tls option is for AE@HOST:PORT; a DICOMweb URL says TLS by its scheme (https://)"
        )
    url, host, port = _split_url(text, base)
    return Destination(
        kind="dicomweb",
        host=host,
        port=port,
        url=url,
        outputs=_outputs(text, options.get("outputs")),
        tls=url.startswith("https://"),
        ca_file=options.get("ca"),
    )


def _dicomweb_from_json(value: Mapping[str, Any]) -> Destination:
    url = value.get("url")
    if not isinstance(url, str) or "?" in url:
        raise ConfigError(
            f"Destination {dict(value)!r}: 'url' must be an http(s):// DICOMweb URL without options, not {url!r}"
        )
    url, host, port = _split_url(url, url)
    derived = {"host": host, "port": port, "tls": url.startswith("https://"), "ae_title": None}
    for key, expected in derived.items():
        if key in value and value[key] != expected:
            raise ConfigError(f"Destination {dict(value)!r}: {key!r} is {value[key]!r} but the URL gives {expected!r}")
    return Destination(
        kind="dicomweb",
        url=url,
        outputs=_outputs_from_json(value, value.get("outputs")),
        ca_file=value.get("ca_file"),
        **{k: v for k, v in derived.items() if k != "ae_title"},
    )


def _split_url(text: str, base: str) -> tuple[str, str, int]:
    try:
        parts = urlsplit(base)
        port = parts.port
    except ValueError as error:
        raise ConfigError(f"Destination {text!r}: not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"Destination {text!r}: a DICOMweb URL must start with https:// or http://, not {parts.scheme}://"
        )
    if parts.username is not None or parts.password is not None:
        raise ConfigError(f"Destination {text!r}: user names and passwords do not belong in the URL")
    if parts.fragment or "#" in base:
        raise ConfigError(f"Destination {text!r}: a DICOMweb URL has no #fragment")
    if parts.query:
        raise ConfigError(f"Destination {text!r}: unexpected query {parts.query!r}")
    host = parts.hostname or ""
    _check_host(f"Destination {text!r}", host)
    if port == 0:
        raise ConfigError(f"Destination {text!r}: port must be 1-65535, not 0")
    path = parts.path.rstrip("/")
    netloc = parts.netloc.lower()
    return f"{parts.scheme}://{netloc}{path}", host, port or (443 if parts.scheme == "https" else 80)


def _port(text: str, value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(f"Destination {text!r}: port must be a number 1-65535, not {value!r}")
    return int(value)


def _outputs(text: str, value: str | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    return _outputs_checked(repr(text), value.split(","))


def _outputs_from_json(value: Mapping[str, Any], outputs: Any) -> tuple[str, ...] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, (list, tuple)) or not all(isinstance(kind, str) for kind in outputs):
        raise ConfigError(
            f"Destination {dict(value)!r}: 'outputs' must be null or a list of {', '.join(OUTPUT_KINDS)}, not {outputs!r}"
        )
    return _outputs_checked(repr(dict(value)), list(outputs))


def _outputs_checked(text: str, kinds: list[str]) -> tuple[str, ...]:
    unknown = [kind for kind in kinds if kind not in OUTPUT_KINDS]
    if unknown or not kinds:
        raise ConfigError(
            f"Destination {text}: outputs must be some of {', '.join(OUTPUT_KINDS)}, not {','.join(kinds)!r}"
        )
    if len(set(kinds)) != len(kinds):
        raise ConfigError(f"Destination {text}: outputs names a kind twice: {','.join(kinds)!r}")
    return tuple(kind for kind in OUTPUT_KINDS if kind in kinds)


def _check_fields(dest: Destination) -> None:
    where = f"Destination {(dest.text() if _printable(dest) else dest)!r}"
    if dest.kind not in KINDS:
        raise ConfigError(f"{where}: kind must be one of {', '.join(KINDS)}, not {dest.kind!r}")
    if not isinstance(dest.tls, bool):
        raise ConfigError(f"{where}: tls must be true or false, not {dest.tls!r}")
    if not isinstance(dest.port, int) or isinstance(dest.port, bool) or not 1 <= dest.port <= 65535:
        raise ConfigError(f"{where}: port must be an integer 1-65535, not {dest.port!r}")
    if not isinstance(dest.host, str):
        raise ConfigError(f"{where}: host must be a string, not {dest.host!r}")
    _check_host(where, dest.host)
    if dest.outputs is not None and (
        not isinstance(dest.outputs, tuple)
        or not dest.outputs
        or dest.outputs != tuple(k for k in OUTPUT_KINDS if k in dest.outputs)
    ):
        raise ConfigError(
            f"{where}: outputs must be None or a tuple of {', '.join(OUTPUT_KINDS)} in that order, not {dest.outputs!r}"
        )
    if dest.ca_file is not None and (not isinstance(dest.ca_file, str) or not dest.ca_file.strip()):
        raise ConfigError(f"{where}: ca_file must be the path of a PEM file or null, not {dest.ca_file!r}")
    if dest.ca_file is not None and not dest.tls:
        raise ConfigError(f"{where}: a CA file ({dest.ca_file}) is given but the destination does not use TLS")
    if dest.kind == "dimse":
        check_ae_title(dest.ae_title, where)
        if dest.url is not None:
            raise ConfigError(f"{where}: a C-STORE destination has no url, found {dest.url!r}")
    else:
        if not isinstance(dest.url, str) or not dest.url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}: a DICOMweb destination needs an http(s):// url, found {dest.url!r}")
        if dest.ae_title is not None:
            raise ConfigError(f"{where}: a DICOMweb destination has no AE title, found {dest.ae_title!r}")
        if dest.tls != dest.url.startswith("https://"):
            raise ConfigError(f"{where}: tls must be {not dest.tls} for {dest.url}")


def _printable(dest: Destination) -> bool:
    return (
        isinstance(dest.host, str)
        and isinstance(dest.port, int)
        and (
            (dest.kind == "dimse" and isinstance(dest.ae_title, str))
            or (dest.kind == "dicomweb" and isinstance(dest.url, str))
        )
    )


def check_ae_title(title: Any, where: str = "AE title") -> None:
    """Refuse (ConfigError) what is not an AE title: 1-16 characters of the default repertoire, no backslash,
    no control character, no leading or trailing space. ``where`` starts the message."""
    if not isinstance(title, str) or not title:
        raise ConfigError(f"{where}: expected an AE title of 1-{AE_TITLE_MAX} characters, found {title!r}")
    if len(title) > AE_TITLE_MAX:
        raise ConfigError(f"{where}: AE title {title!r} has {len(title)} characters; at most {AE_TITLE_MAX}")
    if title != title.strip(" "):
        raise ConfigError(f"{where}: AE title {title!r} starts or ends with a space")
    bad = [c for c in title if c == "\\" or not 32 <= ord(c) < 127]
    if bad:
        raise ConfigError(
            f"{where}: AE title {title!r} has {bad[0]!r}; expected ASCII letters, digits, spaces or punctuation other than backslash"
        )


def _check_host(where: str, host: str) -> None:
    if not host:
        raise ConfigError(f"{where}: no host; expected a DNS name or an IP address")
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ConfigError(f"{where}: host {host!r} is neither a DNS name nor an IP address")


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host
