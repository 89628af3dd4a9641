"""`make demo`: the embedded default. Uses the Prefect server at PREFECT_API_URL when one answers, otherwise
starts one on 127.0.0.1 with its SQLite database under .state/prefect; then creates the `fils-local` pool,
deploys, starts a worker, runs `fils/full-pipeline` on configs/demo.yaml and prints where to look."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from flows.local_server import POOL, REPO_ROOT, LocalPrefect, api_healthy, deploy_all, free_port, start_server
from pipeline.child_process import kill_group

STATE = REPO_ROOT / ".state"
DEFAULT_PORT = 4200


def _connect() -> LocalPrefect:
    api = os.environ.get("PREFECT_API_URL")
    if api and api_healthy(api):
        print(f"using the Prefect server at {api}")
        return LocalPrefect(Path(os.environ.get("PREFECT_HOME", Path.home() / ".prefect")), api)
    home = STATE / "prefect"
    default = f"http://127.0.0.1:{DEFAULT_PORT}/api"
    if api_healthy(default) and (home / "server.pid").is_file():
        print(f"using the demo Prefect server at {default}")
        return LocalPrefect(home, default)
    port = DEFAULT_PORT if not api_healthy(default) and _port_free(DEFAULT_PORT) else free_port()
    print(f"starting a Prefect server on 127.0.0.1:{port} (database in {home}); first start takes ~20 s")
    local = start_server(home, port)
    (home / "server.pid").write_text(str(local.server.pid))  # type: ignore[union-attr]
    return local


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def main() -> int:
    samples = STATE / "samples" / "samples.csv"
    if not samples.is_file():
        subprocess.run([sys.executable, "-m", "stages.cli", "samples", str(samples.parent)], check=True, cwd=REPO_ROOT)
    local = _connect()
    deploy_all(local)
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL],
                              cwd=REPO_ROOT, env=local.env, stdout=open(STATE / "worker.log", "ab"),
                              stderr=subprocess.STDOUT, start_new_session=True)
    try:
        run = subprocess.run([sys.executable, "-m", "prefect", "deployment", "run", "fils/full-pipeline", "--watch",
                              "--watch-timeout", "7200"], cwd=REPO_ROOT, env=local.env)
    finally:  # a Prefect worker can take over a minute to leave its poll loop on SIGTERM: its group is killed after 10 s
        kill_group(worker, grace_s=10)
        worker.wait()
    ui = local.api_url.removesuffix("/api")
    report = REPO_ROOT / ".state" / "demo" / "evaluate" / "report.md"
    print("\n" + "=" * 72)
    print(f"flow run {'completed' if run.returncode == 0 else 'FAILED'}; artifacts are in {STATE / 'demo'}")
    if report.is_file():
        print(f"evaluation report: {report}")
    print(f"Prefect UI: {ui}  (flow runs, stage artifacts, contact sheets, report)")
    if local.server is not None:
        print(f"the server keeps running for the UI; stop it with: kill {local.server.pid}")
    print("=" * 72)
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
