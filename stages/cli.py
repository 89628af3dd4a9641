"""The ``fils`` command: ``run``, ``status`` and ``samples``."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import ConfigError
from stages.config import load_config
from stages.shard.adapters import AnnotationError


def _stage_list(value: str) -> list[str]:
    return [s.strip() for s in value.split(",") if s.strip()]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fils", description="FILS video pretraining pipeline")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run stages (skipping the ones that are up to date)")
    run.add_argument("-c", "--config", required=True, type=Path)
    run.add_argument("--stages", type=_stage_list, default=None, help="comma-separated stages (default: all)")
    run.add_argument("--force", action="append", default=[], metavar="STAGE", help="recompute STAGE (repeatable)")
    run.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    status = sub.add_parser("status", help="show each stage: done, stale, corrupt or missing")
    status.add_argument("-c", "--config", required=True, type=Path)
    status.add_argument("--json", action="store_true")
    status.add_argument("--verify", action="store_true",
                        help="also check the sha256 of every committed file (reads everything; sizes are always checked)")
    status.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    config = sub.add_parser("config", help="print the resolved config (YAML) or the reference of every setting")
    config.add_argument("-c", "--config", type=Path, help="config to resolve (omit with --reference)")
    config.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    config.add_argument("--reference", action="store_true", help="every setting with its type, default and meaning")

    samples = sub.add_parser("samples", help="write the demo dataset (generated clips with ground truth + real clips)")
    samples.add_argument("out", type=Path)
    # Defaults (None) are the demo dataset's, pipeline.samples.DEMO_SAMPLES (imported only by this command).
    samples.add_argument("--clips-per-class", type=int)
    samples.add_argument("--frames", type=int)
    samples.add_argument("--size", help="WIDTHxHEIGHT of generated clips")
    samples.add_argument("--pan", type=float, dest="pan_px_per_frame", help="camera pan in pixels per frame")
    samples.add_argument("--validation-every", type=int,
                         help="every n-th clip of a class goes to the validation split (0: none)")
    samples.add_argument("--caption-accuracy", type=float,
                         help="how often a caption names the true motion (captions are paraphrased and noisy)")
    samples.add_argument("--background-contrast", type=float,
                         help="1: full-contrast textured backgrounds; lower fades them towards grey")
    samples.add_argument("--no-real", action="store_true", help="leave out the real footage")
    samples.add_argument("--seed", type=int)
    return parser


def _cmd_run(args: argparse.Namespace) -> int:
    from pipeline.runner import run_pipeline
    from stages import registry

    cfg = load_config(args.config, args.overrides)
    outcomes = run_pipeline(registry(), cfg, args.stages, set(args.force))
    for outcome in outcomes:
        counts = ", ".join(f"{k}={v}" for k, v in outcome.record.row_counts.items())
        print(f"{outcome.stage:<13} {outcome.action:<8} {counts}")
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    from pipeline.artifacts import ArtifactStore
    from pipeline.runner import pipeline_status
    from stages import registry

    cfg = load_config(args.config, args.overrides)
    specs = registry()
    statuses = pipeline_status(specs, cfg, ArtifactStore(cfg.workdir, specs), checksums=args.verify)
    corrupt = any(s.state == "corrupt" for s in statuses)
    if args.json:
        print(json.dumps([s.as_dict() for s in statuses], indent=2))
        return 1 if corrupt else 0
    for s in statuses:
        counts = ", ".join(f"{k}={v}" for k, v in s.row_counts.items())
        fp = (s.recorded_fingerprint or s.fingerprint or "-")[:12]
        print(f"{s.stage:<13} {s.state:<8} {fp:<12} {counts}{'  (' + s.reason + ')' if s.reason else ''}")
    if corrupt:
        print("corrupt stages are rebuilt by the next `fils run`", file=sys.stderr)
    return 1 if corrupt else 0


def _reference_lines(schema: dict, node: dict, prefix: str) -> list[str]:
    """One line per setting, flattened from the JSON schema of the config tree."""
    lines = []
    for name, prop in node.get("properties", {}).items():
        key = f"{prefix}{name}"
        target = prop
        for option in prop.get("anyOf", []) + prop.get("allOf", []):
            if "$ref" in option:
                target = option
        if "$ref" in target:
            lines += _reference_lines(schema, schema["$defs"][target["$ref"].split("/")[-1]], key + ".")
            continue
        kind = prop.get("type") or " | ".join(o.get("type", "?") for o in prop.get("anyOf", [])) or "?"
        if "enum" in prop:
            kind = " | ".join(map(str, prop["enum"]))
        default = f" = {json.dumps(prop['default'])}" if "default" in prop else ""
        lines.append(f"{key} ({kind}){default}: {prop.get('description', '')}".rstrip(": "))
    return lines


def _cmd_config(args: argparse.Namespace) -> int:
    import yaml

    from stages.config import FilsConfig

    if args.reference:
        schema = FilsConfig.model_json_schema()
        print("\n".join(_reference_lines(schema, schema, "")))
        return 0
    if args.config is None:
        raise ConfigError("give -c CONFIG to resolve, or --reference")
    cfg = load_config(args.config, args.overrides)
    print(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False), end="")
    return 0


def _cmd_samples(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from pipeline.samples import DEMO_SAMPLES, write_samples

    given = {name: getattr(args, name) for name in ("clips_per_class", "frames", "pan_px_per_frame",
                                                     "validation_every", "caption_accuracy", "background_contrast",
                                                     "seed") if getattr(args, name) is not None}
    if args.size is not None:
        try:
            given["width"], given["height"] = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            raise ConfigError(f"--size {args.size!r}: expected WIDTHxHEIGHT, for example 96x72") from None
    try:
        csv_path = write_samples(args.out, replace(DEMO_SAMPLES, real=not args.no_real, **given))
    except ValueError as exc:
        raise ConfigError(f"fils samples: {exc}") from None
    print(f"wrote {csv_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipeline.locks import WorkdirBusy
    from pipeline.runner import StageError

    try:
        commands = {"run": _cmd_run, "status": _cmd_status, "config": _cmd_config, "samples": _cmd_samples}
        return commands[args.command](args)
    except WorkdirBusy as exc:
        print(f"busy: {exc}", file=sys.stderr)
        return 75  # EX_TEMPFAIL: try again later
    except (ConfigError, AnnotationError, StageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full workdir, a path that is a file, ...: the machine, not a bug
        if args.verbose:
            raise
        where = f" ({exc.filename})" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}; nothing finished was lost (rerun with -v for the traceback)",
              file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
