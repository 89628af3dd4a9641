"""What each stage shows in the Prefect UI: a summary table (its description links the stage's other artifacts),
a link to its ``_SUCCESS.json``, its images (contact sheets, plots) and its markdown report.

The UI cannot reach the workdir, so images travel inside the artifact as data URIs; the UI renders nothing of an
artifact of a few MB (a 2 MB contact sheet showed as an empty page), so an image above ``MAX_INLINE_BYTES`` is
shown as a JPEG preview of at most ``PREVIEW_WIDTH`` pixels, images are split over several artifacts of at most
``MAX_ARTIFACT_BYTES`` each, and every full-resolution file is listed by its path.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from pipeline.artifacts import SUCCESS_FILE
from pipeline.runner import StageOutcome

MAX_INLINE_BYTES = 300 * 2**10  # an image up to this size is shown as it is
MAX_ARTIFACT_BYTES = 600 * 2**10  # images of one markdown artifact, base64 included
PREVIEW_WIDTH = 1280
PREVIEW_QUALITY = (85, 70, 55)  # JPEG qualities tried in turn until a preview fits MAX_INLINE_BYTES


def _key(stage: str, what: str) -> str:
    return f"fils-{stage.replace('_', '-')}-{what}"


def artifact_link(key: str, text: str) -> str:
    """A markdown link to the UI's page of the latest artifact with ``key`` (relative: any host and port)."""
    return f"[{text}](/artifacts/key/{key})"


_IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)]+\.png)\)")


def _preview(path: Path) -> tuple[str, bytes]:
    """The image as it is when small enough, else a bounded JPEG preview: (MIME type, bytes)."""
    data = path.read_bytes()
    if len(data) <= MAX_INLINE_BYTES:
        return "image/png", data
    import cv2

    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{path} is not an image OpenCV can read")
    width = PREVIEW_WIDTH
    while True:
        scale = min(1.0, width / image.shape[1])
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        for quality in PREVIEW_QUALITY:
            ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(encoded) <= MAX_INLINE_BYTES:
                return "image/jpeg", encoded.tobytes()
        width //= 2


def inline_image(path: Path) -> str:
    """Markdown showing ``path`` (or its preview) inside the artifact; its path alone when it cannot be read."""
    try:
        mime, data = _preview(path)
    except Exception as exc:  # one unreadable image must not hide the stage's other images and artifacts
        return f"`{path}` (not shown: {type(exc).__name__}: {exc})"
    note = "" if mime == "image/png" else " (preview)"
    return f"![{path.name}{note}](data:{mime};base64,{base64.b64encode(data).decode()})"


def inline_report_images(markdown: str, base: Path) -> str:
    """A report's relative PNG links inlined, while the artifact stays within ``MAX_ARTIFACT_BYTES``; images past
    the budget stay links with their paths."""
    budget = MAX_ARTIFACT_BYTES - len(markdown)

    def inline(match: re.Match) -> str:
        nonlocal budget
        path = base / match.group(1)
        if not path.is_file():
            return match.group(0)
        shown = inline_image(path)
        if len(shown) > budget:
            return f"`{path}` (not inlined: the artifact would pass {MAX_ARTIFACT_BYTES // 2**10} KB)"
        budget -= len(shown)
        return shown

    return _IMAGE_LINK.sub(inline, markdown)


def image_pages(images: list[Path]) -> list[str]:
    """Markdown of ``images`` split into pages of at most ``MAX_ARTIFACT_BYTES``, each image followed by the
    path of its full-resolution file."""
    pages: list[list[str]] = [[]]
    size = 0
    for path in images:
        part = f"{inline_image(path)}\n\nfull resolution: `{path.absolute()}`"
        if pages[-1] and size + len(part) > MAX_ARTIFACT_BYTES:
            pages.append([])
            size = 0
        pages[-1].append(part)
        size += len(part)
    return ["\n\n".join(page) for page in pages if page]


def publish_stage_artifacts(outcome: StageOutcome, workdir: Path) -> None:
    record, stage = outcome.record, outcome.stage
    stage_dir = workdir / stage
    images = [stage_dir / p for p in record.extra.get("images", []) if (stage_dir / p).is_file()]
    report = stage_dir / record.extra["report"] if record.extra.get("report") else None
    report = report if report is not None and report.is_file() else None
    links = [artifact_link(_key(stage, "success"), "committed output record")]  # published before any image is read
    if images:
        links.append(artifact_link(_key(stage, "images"), "images"))
    if report is not None:
        links.append(artifact_link(_key(stage, "report"), "report"))
    row = {"stage": stage, "action": outcome.action, "output_id": record.output_id,
           "fingerprint": record.fingerprint[:16], **{f"rows_{k}": v for k, v in record.row_counts.items()},
           **{f"time_{k}": v for k, v in record.timings.items()}}
    create_table_artifact(key=_key(stage, "summary"), table=[row],
                          description=f"**{stage}**: {outcome.action}, output `{record.output_id}` in "
                                      f"`{stage_dir}`. " + " · ".join(links))
    create_link_artifact(key=_key(stage, "success"), link=(stage_dir / SUCCESS_FILE).absolute().as_uri(),
                         link_text=f"{stage}/_SUCCESS.json",
                         description=f"The record of {stage}'s committed output: fingerprint, settings, and every "
                                     "file with its size and sha256 (`fils status --verify` checks them).")
    markdown_pages = image_pages(images)
    for i, markdown in enumerate(markdown_pages):
        part = f", part {i + 1} of {len(markdown_pages)}" if len(markdown_pages) > 1 else ""
        create_markdown_artifact(key=_key(stage, "images") + (f"-{i + 1}" if i else ""), markdown=markdown,
                                 description=f"{stage}: {len(images)} image(s){part} (previews of large ones; "
                                             "the full-resolution files are listed by path)")
    if report is not None:
        create_markdown_artifact(key=_key(stage, "report"), markdown=inline_report_images(report.read_text(),
                                                                                          report.parent),
                                 description=f"{stage} report (`{report}`)")


def publish_sweep_artifacts(result: Any) -> None:
    """The nightly sweep's rows (one per checkpoint and metric); a markdown artifact with any metric drop, what was
    chosen or not scored per checkpoint, the clips decoded, and the trend plots (one per metric)."""
    rows = [{k: v for k, v in row.items() if isinstance(v, (str, int, float))} for row in result.rows]
    plots = [Path(p) for p in result.plots if Path(p).is_file()]
    summary = (f"{len(result.evaluated)} evaluated, {len(result.skipped)} already in the results table, "
               f"{len(result.unscored)} still not scorable, {len(result.failed)} failed, "
               f"{len(result.drops)} metric drop(s)")
    create_table_artifact(key="fils-nightly-eval", table=rows or [{"evaluated": 0}],
                          description=f"{summary}; {artifact_link('fils-nightly-eval-trends', 'notes and trends')}")
    lines = [f"* **{drop}**" for drop in result.drops]
    lines += [f"* `{checkpoint}` failed: {error}" for checkpoint, error in result.failed.items()]
    for checkpoint, notes in result.notes.items():
        decoded = ", ".join(f"{split} {n}" for split, n in result.decoded.get(checkpoint, {}).items())
        lines += [f"* `{checkpoint}`: clips decoded: {decoded or 'none'}"] + [f"  * {note}" for note in notes]
    markdown = "\n\n".join(["\n".join(lines or [summary])] + [inline_image(p) for p in plots])
    where = f" (trend plots: `{plots[0].parent}`)" if plots else ""
    create_markdown_artifact(key="fils-nightly-eval-trends", markdown=markdown, description=summary + where)
