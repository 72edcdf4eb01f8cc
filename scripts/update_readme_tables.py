"""Copy the benchmark tables from benchmarks/results/ into README.md, between marker comments.

    <!-- bench:NAME -->            (replaced, with everything up to the closing marker, by the file's text)
    <!-- /bench:NAME -->

NAME is a file stem in benchmarks/results/ (several stems joined by '+' are inserted in order).
Run after the benchmark scripts: ``python scripts/update_readme_tables.py`` (``--check`` exits 1 when
the README is out of date, for tests).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"<!-- bench:([\w+-]+) -->\n(?:.*?<!-- /bench:\1 -->\n)?", re.S)


def render(readme: str) -> str:
    def table(match: re.Match[str]) -> str:
        name = match.group(1)
        parts = []
        for stem in name.split("+"):
            path = ROOT / "benchmarks" / "results" / f"{stem}.md"
            if not path.is_file():
                raise SystemExit(
                    f"README asks for {path.relative_to(ROOT)}, which does not exist: run its benchmark"
                )
            parts.append(path.read_text(encoding="utf-8").strip())
        body = "\n\n".join(parts)
        return f"<!-- bench:{name} -->\n{body}\n<!-- /bench:{name} -->\n"

    return MARKER.sub(table, readme)


def main() -> int:
    path = ROOT / "README.md"
    current = path.read_text(encoding="utf-8")
    updated = render(current)
    if "--check" in sys.argv[1:]:
        if updated != current:
            print("README.md tables differ from benchmarks/results/: run scripts/update_readme_tables.py")
            return 1
        return 0
    path.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
