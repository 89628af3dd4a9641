"""What the code and configs cite exists: every decision id (D1, B1, ...) is a row of docs/method.md, every
docs/ file named is there."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CITED_ID = re.compile(r"\b([DB][1-9][0-9]?[a-z]?)\b")
CITED_DOC = re.compile(r"\bdocs/[\w./-]+\.md\b")


def _cited_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.py", "*.yaml", "*.md"], cwd=REPO, capture_output=True, text=True,
                            check=True).stdout.split()
    return [REPO / name for name in listed if name != "docs/method.md" and (REPO / name).is_file()]


def test_every_cited_decision_is_recorded_in_docs_method():
    recorded = set(re.findall(r"^\| ([DB][0-9]+) \|", (REPO / "docs" / "method.md").read_text(), re.M))
    missing = {}
    for path in _cited_files():
        for ident in set(CITED_ID.findall(path.read_text())) - recorded:
            missing.setdefault(ident, []).append(str(path.relative_to(REPO)))
    assert not missing, f"cited but not in docs/method.md: {missing}"


def test_every_cited_doc_exists():
    missing = {doc: str(path.relative_to(REPO)) for path in _cited_files()
               for doc in CITED_DOC.findall(path.read_text()) if not (REPO / doc).is_file()}
    assert not missing, missing
