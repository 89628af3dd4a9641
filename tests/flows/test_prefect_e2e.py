"""End to end through a real Prefect server, work pool, `prefect deploy --all` and a worker, as a user runs it."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import torch

from flows.local_server import (
    GPU_SLOTS,
    POOL,
    REPO_ROOT,
    artifacts,
    deploy_all,
    ensure_gpu_slots,
    flow_run,
    run_deployment,
    start_server,
    worker_run_once,
)
from pipeline.artifacts import ArtifactStore
from stages import registry
from stages.evaluate.results import write_rows
from tests.builders.browser import headless_chromium, images, page_text, require_chromium, wait_for
from tests.helpers import marked_processes, wait_until_gone

DATA_IMAGE = re.compile(r"!\[[^\]]*\]\(data:image/")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    local = start_server(tmp_path_factory.mktemp("prefect-home"))
    try:
        deploy_all(local)
        yield local
    finally:
        local.stop()
    assert local.server.poll() is not None  # the server we started is gone


@pytest.fixture(scope="module")
def params(tmp_path_factory, samples_dir) -> dict:
    """One workdir for the module: later tests start from what the earlier ones computed (skips are cheap)."""
    workdir = tmp_path_factory.mktemp("e2e") / "work"
    return {"config_path": "configs/demo.yaml",
            "overrides": [f"workdir={workdir}", f"data.source.root={samples_dir}",
                          f"data.source.annotations={samples_dir / 'samples.csv'}", "shard.short_side=96",
                          f"evaluate.zero_shot.prompts={samples_dir / 'class_prompts.csv'}",
                          "evaluate.split=train"]}  # the shared sample set is too small for a validation split


def _workdir(params: dict) -> Path:
    return Path(params["overrides"][0].removeprefix("workdir="))


def _run(server, deployment: str, params: dict) -> dict:
    run_id = run_deployment(server, deployment, params)
    worker_run_once(server)
    return flow_run(server, run_id)


def _output_ids(workdir: Path) -> dict[str, str]:
    store = ArtifactStore(workdir)
    return {stage: store.success(stage).output_id for stage in registry() if store.success(stage)}


def test_full_pipeline_skip_and_forced_rerun(server, params):
    workdir = _workdir(params)
    first = _run(server, "fils/full-pipeline", params)
    assert first["state"]["type"] == "COMPLETED", first["state"]["message"]
    stages = list(registry())
    for stage in stages:
        assert (workdir / stage / "_SUCCESS.json").is_file(), stage
    keys = {a["key"] for a in artifacts(server) if a.get("key")}
    for stage in stages:
        slug = stage.replace("_", "-")
        assert {f"fils-{slug}-summary", f"fils-{slug}-success"} <= keys
    assert {"fils-optical-flow-images", "fils-evaluate-report", "fils-shard-progress"} <= keys
    ids = _output_ids(workdir)

    again = _run(server, "fils/full-pipeline", params)
    assert again["state"]["type"] == "COMPLETED"
    assert _output_ids(workdir) == ids  # every stage skipped

    forced = _run(server, "fils/captions", {**params, "force": True})
    assert forced["state"]["type"] == "COMPLETED"
    captions = ArtifactStore(workdir).success("captions")
    assert captions.timings["units_run"] >= 1  # recomputed, not skipped ...
    assert _output_ids(workdir) == ids  # ... into the same bytes, so its output id and every later stage stay
    rerun = _run(server, "fils/full-pipeline", params)
    assert rerun["state"]["type"] == "COMPLETED"
    assert _output_ids(workdir) == ids
    for stage in stages[stages.index("captions") + 1:]:  # nothing downstream of captions was recomputed
        assert ArtifactStore(workdir).success(stage).created_at <= captions.created_at, stage


def _api(server, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{server.api_url}/{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_ui_shows_the_run_and_renders_every_artifact(server, params, tmp_path):
    """Headless Chromium on the UI of a server on a non-default port, after the full pipeline: the run page shows
    the run completed with its six stage subflows; every artifact page renders every image its markdown holds and
    shows no error. Screenshots of every page are kept in the test's tmp_path."""
    require_chromium()
    assert _run(server, "fils/full-pipeline", params)["state"]["type"] == "COMPLETED"  # skips after the first test
    ui = server.api_url.removesuffix("/api")
    assert not ui.endswith(":4200")
    with urllib.request.urlopen(f"{ui}/ui-settings", timeout=30) as response:
        assert json.loads(response.read())["api_url"] == server.api_url  # the UI calls this server, not :4200
    (run,) = _api(server, "flow_runs/filter", {"flow_runs": {"parent_task_run_id": {"is_null_": True}},
                                               "sort": "START_TIME_ASC", "limit": 1})  # the first full pipeline
    children = _api(server, "flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}})
    assert len(children) == len(registry())
    shown = [f"stage-{stage.replace('_', '-')}" for stage in registry()] + [c["name"] for c in children]
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with headless_chromium() as driver:
        driver.get(f"{ui}/runs/flow-run/{run['id']}")
        wait_for(driver, lambda d: run["name"] in page_text(d) and "Completed" in page_text(d), what="the run")
        driver.find_element("xpath", "//li[contains(@class, 'p-tab')][normalize-space()='Subflow Runs']").click()
        wait_for(driver, lambda d: f"{len(children)} Flow runs" in page_text(d)
                 and all(name in page_text(d) for name in shown), what="the six stage subflows")
        driver.save_screenshot(str(shots / "flow-run.png"))
        checked = 0
        for artifact in _api(server, "artifacts/latest/filter", {"limit": 200}):  # the REST API: the CLI's
            if not (artifact.get("key") or "").startswith("fils-"):                  # output drops [...] as markup
                continue
            expected = len(DATA_IMAGE.findall(artifact["data"])) if artifact["type"] == "markdown" else 0
            driver.get(f"{ui}/artifacts/artifact/{artifact['latest_id']}")  # the filter lists collections
            wait_for(driver, lambda d, a=artifact: a["key"] in page_text(d), what=artifact["key"])
            if expected:
                wait_for(driver, lambda d, n=expected: len([i for i in images(d) if i[0].startswith("data:image")
                                                            and min(i[1:]) > 0]) >= n,
                         what=f"the {expected} image(s) of {artifact['key']}")
            text = page_text(driver)
            assert "Oops" not in text and "Something went wrong" not in text, (artifact["key"], text[:500])
            assert "No description" not in text, artifact["key"]
            driver.save_screenshot(str(shots / f"{artifact['key']}.png"))
            checked += 1
    assert checked >= 2 * len(registry())  # a summary and a success record per stage, plus images and report
    print(f"UI screenshots: {shots}")


def test_nightly_eval_has_its_cron_schedule_on_the_server(server):
    deployment = json.loads(server.prefect("deployment", "inspect", "fils/nightly-eval", "--output", "json").stdout)
    (schedule,) = deployment["schedules"]
    assert schedule["schedule"]["cron"] == "0 2 * * *" and schedule["schedule"]["timezone"] == "UTC"
    assert schedule["active"] and deployment["parameters"]["sweep"] is True


def test_the_deploy_step_creates_the_gpu_slots_and_keeps_an_operators_size(server):
    limit = json.loads(server.prefect("gcl", "inspect", GPU_SLOTS, "--output", "json").stdout)
    assert limit["limit"] >= 1 and limit["active"]
    server.prefect("gcl", "update", GPU_SLOTS, "--limit", "7")
    ensure_gpu_slots(server)
    assert json.loads(server.prefect("gcl", "inspect", GPU_SLOTS, "--output", "json").stdout)["limit"] == 7


def test_nightly_sweep_evaluates_only_new_checkpoints(server, params):
    assert _run(server, "fils/full-pipeline", params)["state"]["type"] == "COMPLETED"
    table = _workdir(params) / "results" / "results.parquet"
    before = len(pq.read_table(table))
    sweep = _run(server, "fils/nightly-eval", {"overrides": params["overrides"]})
    assert sweep["state"]["type"] == "COMPLETED", sweep["state"]["message"]
    after_first = len(pq.read_table(table))
    assert after_first > before  # the pretrain encoder checkpoint was probed and scored
    again = _run(server, "fils/nightly-eval", {"overrides": params["overrides"]})
    assert again["state"]["type"] == "COMPLETED"
    assert len(pq.read_table(table)) == after_first  # nothing new to evaluate
    keys = {a["key"] for a in artifacts(server) if a.get("key")}
    assert {"fils-nightly-eval", "fils-nightly-eval-trends"} <= keys

    # An earlier checkpoint scored 100 % zero-shot: the next one (random weights: chance) has its scores recorded,
    # then the run fails on the drop.
    rows = pq.read_table(table).to_pylist()
    best = [r | {"checkpoint": "an-earlier-best", "value": 1.0} for r in rows if r["protocol"] == "zero_shot"]
    assert best, "the sweep scored no zero-shot"
    write_rows(best + rows, table)
    state = torch.load(_workdir(params) / "pretrain" / "checkpoint.pt", weights_only=True)
    torch.manual_seed(0)
    state["model"] = {k: 0.02 * torch.randn_like(v) if v.is_floating_point() else v
                      for k, v in state["model"].items()}
    torch.save(state, _workdir(params) / "pretrain" / "checkpoints" / "step_99999999.pt")
    dropped = _run(server, "fils/nightly-eval", {"overrides": params["overrides"]})
    assert dropped["state"]["type"] == "FAILED", dropped["state"]
    assert "below the best earlier checkpoint" in dropped["state"]["message"]
    assert len(pq.read_table(table)) > len(best) + after_first  # its rows were recorded before failing


def _trainer_started(mark: str) -> bool:
    for pid in marked_processes(mark):
        try:
            if b"stages.pretrain.stage" in Path(f"/proc/{pid}/cmdline").read_bytes():
                return True
        except OSError:
            pass
    return False


@pytest.mark.skipif(sys.platform != "linux", reason="finds survivors through /proc")
def test_kill_9_of_the_worker_during_training_stops_its_run_and_a_rerun_resumes(server, params, tmp_path, mark):
    """The worker's flow-run process, the trainer and its loader workers all go with the worker; the rerun
    resumes (nothing committed is redone) and gives the bytes of an uninterrupted run."""
    assert _run(server, "fils/full-pipeline", params)["state"]["type"] == "COMPLETED"  # reference (skips if done)
    reference = _output_ids(_workdir(params))
    workdir = tmp_path / "work"
    killed = {**params, "overrides": [f"workdir={workdir}", *params["overrides"][1:]]}
    upstream = ["shard", "optical_flow", "captions"]
    for stage in upstream:  # the committed upstream outputs of the reference run, as they are
        shutil.copytree(_workdir(params) / stage, workdir / stage)
    committed = {stage: ArtifactStore(workdir).success(stage).created_at for stage in upstream}

    seed = random.randrange(2**32)
    training_s = ArtifactStore(_workdir(params)).success("pretrain").timings["process_s"]
    delay = random.Random(seed).uniform(0.0, 0.8 * training_s)  # a point inside training
    print(f"worker killed {delay:.2f} s after the trainer started (seed {seed}; training takes {training_s} s)")
    run_id = run_deployment(server, "fils/pretrain", killed)
    worker = subprocess.Popen([sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--run-once"],
                              cwd=REPO_ROOT, env=server.env, stdout=subprocess.DEVNULL,
                              stderr=open(tmp_path / "worker.log", "w"))
    deadline = time.monotonic() + 300
    while not _trainer_started(mark):
        assert worker.poll() is None and time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
        time.sleep(0.2)
    time.sleep(delay)
    saved = {p.name: p.stat().st_ino for p in workdir.glob(".staging/pretrain/**/checkpoints/step_*.pt")}
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()


    survivors = wait_until_gone(mark, seconds=120)
    assert survivors == [], f"processes of the killed run survive: {survivors}"
    state = flow_run(server, run_id)["state"]
    assert state["type"] != "COMPLETED" and ArtifactStore(workdir).success("pretrain") is None

    rerun = _run(server, "fils/pretrain", killed)
    assert rerun["state"]["type"] == "COMPLETED", rerun["state"]["message"]
    store = ArtifactStore(workdir)
    assert {stage: store.success(stage).created_at for stage in upstream} == committed
    kept = {p.name: p.stat().st_ino for p in (workdir / "pretrain" / "checkpoints").glob("step_*.pt")}
    for name in saved.keys() & kept.keys():  # saved before the kill: resumed from, not recomputed
        assert kept[name] == saved[name], name
    ids = _output_ids(workdir)
    assert ids == {stage: reference[stage] for stage in [*upstream, "pretrain"]}
    assert wait_until_gone(mark) == []
