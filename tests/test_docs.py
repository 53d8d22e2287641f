"""What the repository cites is in the repository: no design notes users never see, no paths of
one machine, and every `docs/protocols.md#section` citation names a section that exists."""

import os
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCOPE = ("map3d", "configs", "tests", "data", "docs", "benchmarks", "tools", "README.md")
THIS = Path(__file__).resolve()
PROTOCOLS = ROOT / "docs" / "protocols.md"

# Documents outside the repository, and absolute paths of a build machine.
FORBIDDEN = re.compile(r"DATASETS\.md|DESIGN\.md|(?<![\w.~-])/(?:work|root)/")
CITATION = re.compile(r"docs/protocols\.md#([A-Za-z0-9_-]+)")


def _tracked_files() -> list[Path]:
    """Files in SCOPE: the tracked ones (plus untracked, not ignored) when this is a git
    checkout, else every file under SCOPE outside hidden and cache folders."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", *SCOPE],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        return [ROOT / name for name in out.decode().split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for top in SCOPE:
            path = ROOT / top
            if path.is_file():
                files.append(path)
                continue
            for folder, dirs, names in os.walk(path):
                dirs[:] = [d for d in dirs if not d.startswith(".") and d != "__pycache__"]
                files.extend(Path(folder) / n for n in names)
        return files


def _texts() -> dict[str, str]:
    """Relative path -> text of every text file in scope except this test."""
    texts = {}
    for path in _tracked_files():
        if path.resolve() == THIS or not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:  # binary (images, arrays)
            continue
        texts[path.relative_to(ROOT).as_posix()] = data.decode("utf-8", errors="replace")
    return texts


def _hits(pattern: re.Pattern, texts: dict[str, str]) -> list[str]:
    return [
        f"{name}:{number}: {line.strip()}"
        for name, text in texts.items()
        for number, line in enumerate(text.splitlines(), 1)
        if pattern.search(line)
    ]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def _anchors() -> set[str]:
    return {
        _anchor(line.lstrip("#"))
        for line in PROTOCOLS.read_text().splitlines()
        if re.match(r"#{1,6} ", line)
    }


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    found = _texts()
    assert "README.md" in found and "docs/protocols.md" in found
    return found


def test_no_citation_of_documents_outside_the_repository_nor_machine_paths(texts):
    hits = _hits(FORBIDDEN, texts)
    assert not hits, (
        "cite docs/protocols.md (or another file in the repository) and use relative paths:\n"
        + "\n".join(hits)
    )


def test_the_pattern_catches_what_it_should():
    # Spelt in pieces so that a `git grep` for them finds only real citations.
    for line in (
        "see DATA" + "SETS.md A6",
        "(DES" + "IGN.md §2)",
        "/wo" + "rk/shared/x",
        '"/ro' + 'ot/x"',
    ):
        assert FORBIDDEN.search(line), line
    for line in ("runs/wo" + "rk/x", "docs/protocols.md#voting", "~/wo" + "rk/data", "/data/x"):
        assert not FORBIDDEN.search(line), line


def test_protocol_citations_name_existing_sections(texts):
    anchors = _anchors()
    cited = {(name, anchor) for name, text in texts.items() for anchor in CITATION.findall(text)}
    assert cited, "nothing cites docs/protocols.md"
    missing = sorted(f"{name}: #{anchor}" for name, anchor in cited if anchor not in anchors)
    assert not missing, f"no such section in docs/protocols.md: {missing}"


def test_protocols_internal_links_resolve():
    text = PROTOCOLS.read_text()
    anchors = _anchors()
    links = re.findall(r"\]\(#([^)]+)\)", text)
    assert links
    assert sorted(set(links) - anchors) == []
