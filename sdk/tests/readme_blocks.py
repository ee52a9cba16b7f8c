"""The README's fenced code blocks, so tests can run exactly what the README shows.

    readme_blocks.py MARKER     prints the block that follows "<!-- MARKER -->" in README.md
"""
import pathlib
import re
import sys
from typing import Dict, List

REPO = pathlib.Path(__file__).resolve().parents[2]
_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
_MARKED = re.compile(r"<!-- ([\w-]+) -->\s*\n```[^\n]*\n(.*?)^```", re.S | re.M)


def readme() -> str:
    return (REPO / "README.md").read_text()


def fenced_blocks(text: str) -> List[str]:
    return _FENCE.findall(text)


def marked_blocks(text: str) -> Dict[str, str]:
    return dict(_MARKED.findall(text))


if __name__ == "__main__":
    blocks = marked_blocks(readme())
    if len(sys.argv) != 2 or sys.argv[1] not in blocks:
        sys.exit(f"usage: readme_blocks.py MARKER (markers in README.md: {sorted(blocks)})")
    sys.stdout.write(blocks[sys.argv[1]])
