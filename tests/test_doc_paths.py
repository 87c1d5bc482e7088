"""Every test file the README, docs/ and scripts/ cite exists (tests moved into tests/<area>/)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_cited_test_files_exist():
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "scripts").rglob("*.*")),
             *sorted((ROOT / "mvpose").rglob("*.md"))]
    cited = {m for t in texts if t.is_file() for m in re.findall(r"tests/[\w/]+\.py", t.read_text(errors="replace"))}
    assert "tests/models/test_fast_paths.py" in cited
    assert sorted(c for c in cited if not (ROOT / c).is_file()) == []
