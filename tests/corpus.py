"""The shared real-world corpus of malformed and tricky images (``shared/corpus/real-world``).

It lives beside the repository, not in it: ``../shared/corpus/real-world`` from the repository
root in a work tree, or any ``shared/corpus/real-world`` in a directory above (CI copies
``shared/`` next to its clone). Its README states the contract the tests check; its MANIFEST
says which class each file is in and which valid files this libvips build cannot decode.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_PARTS = ("shared", "corpus", "real-world")


@dataclass(frozen=True, slots=True)
class CorpusFile:
    path: Path
    name: str
    """Relative to the corpus directory, as in the MANIFEST."""
    kind: str
    """``refuse``, ``malformed``, ``tricky-valid``, or ``codec-gap`` (tricky-valid, no codec)."""
    note: str


def find_corpus() -> Path | None:
    """The corpus directory, or None when it is not beside this checkout."""
    candidates = [REPO_ROOT.parent.joinpath(*CORPUS_PARTS)]
    candidates += [parent.joinpath(*CORPUS_PARTS) for parent in REPO_ROOT.parents]
    for candidate in candidates:
        if (candidate / "MANIFEST.tsv").is_file():
            return candidate
    return None


def load_corpus(root: Path) -> list[CorpusFile]:
    """Every file listed in the MANIFEST; a valid file the reference run could not decode
    (``libvips_8_18_outcome`` is an error) is a codec gap, allowed a clean error."""
    files = []
    with (root / "MANIFEST.tsv").open(newline="", encoding="utf-8") as manifest:
        for row in csv.DictReader(manifest, delimiter="\t"):
            kind = row["class"]
            if kind == "tricky-valid" and not row["libvips_8_18_outcome"].startswith("ok"):
                kind = "codec-gap"
            files.append(CorpusFile(root / row["path"], row["path"], kind, row["note"]))
    return files
