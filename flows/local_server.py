"""A local Prefect server, work pool, deployments and worker: the embedded default behind `make demo`,
also used by the end-to-end tests. Everything goes through the `prefect` CLI, exactly as a user would."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.runtime import RuntimeConfig

REPO_ROOT = Path(__file__).resolve().parents[1]
POOL = "fils-local"
GPU_SLOTS: str = RuntimeConfig.model_fields["gpu_slots"].default  # the limit runtime.gpu_slots names


def api_healthy(api_url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as response:
            return response.status == 200
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalPrefect:
    """Environment for talking to one Prefect server from subprocesses."""

    home: Path
    api_url: str
    server: subprocess.Popen | None = None  # set when we started the server

    @property
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"PREFECT_HOME": str(self.home), "PREFECT_API_URL": self.api_url,
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "FILS_REPO_ROOT": str(REPO_ROOT),
                    "PREFECT_LOGGING_LEVEL": env.get("PREFECT_LOGGING_LEVEL", "INFO")})
        return env

    def prefect(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cmd = [sys.executable, "-m", "prefect", *args]
        result = subprocess.run(cmd, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"`prefect {' '.join(args)}` failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def stop(self) -> None:
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.server.kill()
                self.server.wait()


def start_server(home: Path, port: int | None = None, startup_timeout: float = 180) -> LocalPrefect:
    """Start ``prefect server start`` on 127.0.0.1 with its SQLite database under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    local = LocalPrefect(home, f"http://127.0.0.1:{port}/api")
    env = local.env
    env.pop("PREFECT_API_URL")  # the server itself does not need a client URL ...
    # ... but its UI does: unset, the UI calls the API at the default port 4200, whatever --port says.
    env.setdefault("PREFECT_SERVER_UI_API_URL", local.api_url)  # one the user set (a proxy, a remote UI) wins
    log = open(home / "server.log", "ab")
    local.server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + startup_timeout
    while time.time() < deadline:
        if local.server.poll() is not None:
            raise RuntimeError(f"prefect server exited ({local.server.returncode}); see {home / 'server.log'}")
        if api_healthy(local.api_url):
            return local
        time.sleep(0.5)
    local.stop()
    raise RuntimeError(f"prefect server did not become healthy in {startup_timeout:.0f} s; see {home / 'server.log'}")


def deploy_all(local: LocalPrefect) -> None:
    local.prefect("work-pool", "create", POOL, "--type", "process", "--overwrite")
    ensure_gpu_slots(local)
    local.prefect("--no-prompt", "deploy", "--all")


def ensure_gpu_slots(local: LocalPrefect, name: str = GPU_SLOTS) -> None:
    """The global concurrency limit that GPU stages hold a slot of per GPU (flows/gpu_slots.py), with one slot per
    GPU of this machine (at least one), unless it exists: an operator's own size is kept."""
    if local.prefect("gcl", "inspect", name, check=False).returncode == 0:
        return
    from pipeline.gpus import visible_gpus

    local.prefect("gcl", "create", name, "--limit", str(max(1, len(visible_gpus()))))


def run_deployment(local: LocalPrefect, name: str, params: dict[str, object] | None = None) -> str:
    """Create a flow run of ``name`` and return its id."""
    args = ["deployment", "run", name]
    if params:
        args += ["--params", json.dumps(params)]
    out = local.prefect(*args).stdout
    for line in out.splitlines():
        if "UUID:" in line:
            return line.split("UUID:")[1].strip()
    raise RuntimeError(f"no flow run id in the output of `prefect deployment run {name}`:\n{out}")


def worker_run_once(local: LocalPrefect, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Execute the pending flow runs of the pool, then exit."""
    return local.prefect("worker", "start", "--pool", POOL, "--run-once", timeout=timeout)


def flow_run(local: LocalPrefect, run_id: str) -> dict:
    return json.loads(local.prefect("flow-run", "inspect", run_id, "--output", "json").stdout)


def artifacts(local: LocalPrefect) -> list[dict]:
    return json.loads(local.prefect("artifact", "ls", "--output", "json", "--limit", "200").stdout)
