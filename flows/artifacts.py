"""What each stage shows in the Prefect UI: a summary table, a link to its ``_SUCCESS.json``, its images
(contact sheets, plots) and its markdown report."""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from pipeline.artifacts import SUCCESS_FILE
from pipeline.runner import StageOutcome

MAX_INLINE_IMAGE_BYTES = 2 * 2**20


def _key(stage: str, what: str) -> str:
    return f"fils-{stage.replace('_', '-')}-{what}"


_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+\.png)\)")


def _inline_linked(match: re.Match, base: Path) -> str:
    """A report's relative PNG link, inlined so the UI shows the picture (it cannot reach the file)."""
    path = base / match.group(1)
    if path.is_file() and path.stat().st_size <= MAX_INLINE_IMAGE_BYTES:
        return _inline_image(path)
    return match.group(0)


def _inline_image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f"![{path.name}](data:image/png;base64,{data})"


def publish_stage_artifacts(outcome: StageOutcome, workdir: Path) -> None:
    record = outcome.record
    stage_dir = workdir / outcome.stage
    row = {"stage": outcome.stage, "action": outcome.action, "output_id": record.output_id,
           "fingerprint": record.fingerprint[:16], **{f"rows_{k}": v for k, v in record.row_counts.items()},
           **{f"time_{k}": v for k, v in record.timings.items()}}
    create_table_artifact(key=_key(outcome.stage, "summary"), table=[row],
                          description=f"{outcome.stage}: {outcome.action}")
    create_link_artifact(key=_key(outcome.stage, "success"), link=(stage_dir / SUCCESS_FILE).absolute().as_uri(),
                         link_text=f"{outcome.stage}/_SUCCESS.json")
    images = [stage_dir / p for p in record.extra.get("images", [])]
    if images:
        parts = [_inline_image(p) if p.stat().st_size <= MAX_INLINE_IMAGE_BYTES else f"`{p}` (too large to inline)"
                 for p in images if p.is_file()]
        create_markdown_artifact(key=_key(outcome.stage, "images"), markdown="\n\n".join(parts),
                                 description=f"{outcome.stage} images")
    report = stage_dir / record.extra["report"] if record.extra.get("report") else None
    if report is not None and report.is_file():
        markdown = _IMAGE_LINK.sub(lambda m: _inline_linked(m, report.parent), report.read_text())
        create_markdown_artifact(key=_key(outcome.stage, "report"), markdown=markdown)


def publish_sweep_artifacts(result: Any) -> None:
    """The nightly sweep's rows (one per checkpoint and metric) and its metric-over-checkpoints plot."""
    rows = [{k: v for k, v in row.items() if isinstance(v, (str, int, float))} for row in result.rows]
    create_table_artifact(key="fils-nightly-eval", table=rows or [{"evaluated": 0}],
                          description=f"{len(result.evaluated)} evaluated, {len(result.skipped)} already in the "
                                      f"results table, {len(result.failed)} failed")
    if result.plot is not None and Path(result.plot).is_file():
        create_markdown_artifact(key="fils-nightly-eval-plot", markdown=_inline_image(Path(result.plot)))
