"""Serve the deployments of prefect.yaml from this process, without a work pool or worker:

    python -m flows.serve            # then: prefect deployment run fils/full-pipeline
"""
from __future__ import annotations

import yaml
from prefect import serve

from flows.fils_flow import fils
from flows.local_server import REPO_ROOT


def deployments() -> list:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    made = []
    for entry in spec["deployments"]:
        cron = next((s["cron"] for s in entry.get("schedules", []) if "cron" in s), None)
        made.append(fils.to_deployment(name=entry["name"], parameters=entry.get("parameters", {}), cron=cron,
                                       description=entry.get("description")))
    return made


if __name__ == "__main__":
    serve(*deployments())
