"""A real PACS for the node's tests: Debian's Orthanc (``/usr/sbin/Orthanc``, 1.10) on loopback.

``OrthancServer(folder)`` picks free DICOM and HTTP ports and writes a throw-away configuration and storage
folder under ``folder``; nothing of the system's ``/etc/orthanc`` is read. It is not started until
``start()`` (so a test can point a sender at it while it is still down and start it later); ``stop()``
ends it (SIGTERM, then SIGKILL). Configuration:

- DICOM AE title ``ORTHANC`` (``DicomCheckCalledAet``: another called AE title is rejected);
- only the calling AE titles in ``modalities`` may associate, from 127.0.0.1 (``DicomAlwaysAllowStore`` and
  ``DicomAlwaysAllowEcho`` off, ``DicomCheckModalityHost`` on); an unknown calling AE is refused;
- HTTP: ``RemoteAccessAllowed`` false and authentication off (loopback clients only);
- the DICOMweb plugin (Debian's ``orthanc-dicomweb``) when installed, at ``/dicom-web/`` (``DICOMWEB_PLUGIN``);
- a Lua script (``lua``), e.g. a ``ReceivedInstanceFilter`` that refuses some instances with a failure status;
- TLS for DICOM when ``tls=(certificate, key, trusted)`` PEM paths are given.

REST helpers read what arrived: ``instances()``, ``instance_file(id)``, ``sop_class(id)``,
``find_by_sop_class(uid)``, ``datasets()``. Fixtures: ``orthanc`` (started, stopped at teardown) and
``orthanc_server`` (configured, not started; killed at teardown if a test started it). Import them into a
test module: ``from orthanc import orthanc, orthanc_server  # noqa: F401``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ORTHANC = Path("/usr/sbin/Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AE_TITLE = "ORTHANC"
CALLING_AE = "PANTHERSEG"
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port free on loopback now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class OrthancServer:
    """One Orthanc process with its own configuration, storage and log under ``folder``."""

    def __init__(
        self,
        folder: Path,
        *,
        modalities: dict[str, str] | None = None,
        dicomweb: bool = True,
        tls: tuple[Path, Path, Path] | None = None,
        lua: str | None = None,
    ):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.dicom_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.dicom_port:
            self.http_port = free_port()
        self.modalities = modalities if modalities is not None else {"pantherseg": CALLING_AE}
        self.dicomweb = dicomweb and DICOMWEB_PLUGIN.exists()
        self.tls = tls
        self.lua = lua
        self.config_path = self.folder / "orthanc.json"
        self.log_path = self.folder / "orthanc.log"
        self.process: subprocess.Popen | None = None
        self.config_path.write_text(json.dumps(self.config(), indent=2), encoding="utf-8")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def config(self) -> dict:
        storage = self.folder / "storage"
        config = {
            "Name": "pantherseg-test",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            "DicomAet": AE_TITLE,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "SslEnabled": False,
            "DicomCheckCalledAet": True,
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            # name -> [calling AE, host, port]: who may store here (the port is for Orthanc's own C-MOVEs)
            "DicomModalities": {name: [ae, "127.0.0.1", 104] for name, ae in self.modalities.items()},
            "DicomScpTimeout": 30,
            "UnknownSopClassAccepted": False,
            "SaveJobs": False,
            "HttpDescribeErrors": True,
            "Plugins": [str(DICOMWEB_PLUGIN)] if self.dicomweb else [],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "EnableWado": False},
        }
        if self.lua is not None:
            script = self.folder / "filter.lua"
            script.write_text(self.lua, encoding="utf-8")
            config["LuaScripts"] = [str(script)]
        if self.tls is not None:
            certificate, key, trusted = self.tls
            config.update(
                {
                    "DicomTlsEnabled": True,
                    "DicomTlsCertificate": str(certificate),
                    "DicomTlsPrivateKey": str(key),
                    "DicomTlsTrustedCertificates": str(trusted),
                    "DicomTlsRemoteCertificateRequired": False,
                }
            )
        return config

    # --- life -------------------------------------------------------------------------------------------

    def start(self, timeout_s: float = START_TIMEOUT_S) -> OrthancServer:
        """Start Orthanc and wait until its REST API answers (and its DICOM port listens)."""
        if not ORTHANC.exists():
            raise RuntimeError(f"{ORTHANC} is missing: apt-get install orthanc")
        if self.process is not None and self.process.poll() is None:
            return self
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [str(ORTHANC), "--no-jobs", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.folder,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.process.returncode}: {self.log_tail()}")
            if self._answers():
                return self
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc did not answer on {self.url} within {timeout_s} s: {self.log_tail()}")

    def _answers(self) -> bool:
        try:
            requests.get(f"{self.url}/system", timeout=1).raise_for_status()
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except (requests.RequestException, OSError):
            return False

    def stop(self) -> None:
        """End Orthanc: SIGTERM to its process group, SIGKILL after 10 s. Safe to call when not running."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def kill(self) -> None:
        """End Orthanc at once (SIGKILL), as a crash would; a throw-away server needs no clean shutdown, which
        takes Orthanc about 3 s. Safe to call when not running."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # --- REST ---------------------------------------------------------------------------------------------

    def get(self, path: str, **kwargs) -> requests.Response:
        response = requests.get(f"{self.url}{path}", timeout=30, **kwargs)
        response.raise_for_status()
        return response

    def instances(self) -> list[str]:
        """Orthanc's ids of every stored instance."""
        return self.get("/instances").json()

    def instances_or_none(self) -> list[str] | None:
        """``instances()``, or None when the REST API does not answer (not started, stopped)."""
        try:
            return self.instances()
        except requests.RequestException:
            return None

    def instance_file(self, instance_id: str) -> bytes:
        """The stored DICOM Part 10 file, byte for byte as Orthanc keeps it."""
        return self.get(f"/instances/{instance_id}/file").content

    def dataset(self, instance_id: str):
        import pydicom

        return pydicom.dcmread(io.BytesIO(self.instance_file(instance_id)))

    def sop_class(self, instance_id: str) -> str:
        return self.get(f"/instances/{instance_id}/metadata/SopClassUid").text.strip()

    def find_by_sop_class(self, sop_class_uid: str) -> list[str]:
        return [instance for instance in self.instances() if self.sop_class(instance) == sop_class_uid]

    def datasets(self) -> list:
        """Every stored instance read with pydicom."""
        return [self.dataset(instance) for instance in self.instances()]

    def remote_aet(self, instance_id: str) -> str:
        """The calling AE title that stored the instance (Orthanc's RemoteAET metadata; empty for REST/STOW)."""
        response = requests.get(f"{self.url}/instances/{instance_id}/metadata/RemoteAET", timeout=30)
        return response.text.strip() if response.ok else ""


@pytest.fixture
def orthanc_server(tmp_path):
    """An Orthanc configured under tmp_path with free ports, not started; killed at teardown."""
    server = OrthancServer(tmp_path / "orthanc")
    yield server
    server.kill()
    shutil.rmtree(server.folder / "storage", ignore_errors=True)


@pytest.fixture
def orthanc(orthanc_server):
    """A running Orthanc (see ``OrthancServer``), killed at teardown even when the test fails."""
    return orthanc_server.start()
