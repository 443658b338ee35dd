"""Every ```python and ```bash block of README.md and docs/*.md runs and succeeds.

A block that needs a cluster, the internet, a data set or minutes carries an HTML comment on
the line just above its fence: ``<!-- skip: reason -->`` (listed as skipped, with the reason,
in every run) or ``<!-- slow: reason -->`` (runs with ``-m slow``, ``make test-all``).

Each block runs in a fresh copy of one small world, made once per session, that holds what
the documentation's examples name: ``photos/`` (two classes of real photos: faces and other
pictures from scikit-image's ``lfw_subset``), ``test_photos/`` (labelled, the same classes),
``new_photos/`` (unlabelled), ``labels.csv`` (a manifest of ``photos/``), ``reviews.csv``
(102 labelled sentences), ``photos.h5`` (the
default backbone's embeddings of them) and ``model.joblib`` (fitted on them). A ``bash`` block
runs line by line: a ``deepfeat ...`` line through :func:`deepfeat.cli.main.main` in this
process (it must exit 0), any other line through bash. A ``python`` block is executed as a
script.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash")
#: Fence languages that are shown, never run (file layouts, program output).
SHOWN = ("text",)
_MARK = re.compile(r"^<!--\s*(skip|slow):\s*(.+?)\s*-->$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    mark: str | None  # "skip", "slow" or None
    reason: str

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _fences(path: Path) -> list[tuple[int, str, str, str]]:
    """``(line, language, code, the line above the fence)`` of every fenced block."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out, i = [], 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        above = next((x.strip() for x in reversed(lines[:i]) if x.strip()), "")
        out.append((i + 1, m.group(1), "\n".join(lines[i + 1 : j]), above))
        i = j + 1
    return out


def collect(paths: list[Path] = DOCUMENTS) -> list[Block]:
    blocks = []
    for path in paths:
        for line, lang, code, above in _fences(path):
            if lang not in RUNNABLE:
                continue
            m = _MARK.match(above)
            blocks.append(Block(path, line, lang, code, m.group(1) if m else None,
                                m.group(2) if m else ""))
    return blocks


BLOCKS = collect()


def _param(b: Block):
    marks = {"skip": [pytest.mark.skip(reason=f"{b.id}: {b.reason}")],
             "slow": [pytest.mark.slow], None: []}[b.mark]
    return pytest.param(b, id=b.id, marks=marks)


# ------------------------------------------------------------------------------- the world
def _lfw_images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    from skimage import data

    imgs = data.lfw_subset()  # 100 faces, then 100 other pictures, 25 x 25 grey levels
    return list(imgs[:100]), list(imgs[100:])


def _save(img: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).astype(np.uint8)).convert("RGB").resize((96, 96)).save(path, quality=92)


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the documentation's examples run in (see the module docstring)."""
    from deepfeat.cli.main import main

    w = tmp_path_factory.mktemp("docs_world")
    faces, other = _lfw_images()
    for cls, imgs in (("face", faces), ("other", other)):
        for i in range(8):
            _save(imgs[i], w / "photos" / cls / f"{cls}{i}.jpg")
        for i in range(8, 12):
            _save(imgs[i], w / "test_photos" / cls / f"{cls}{i}.jpg")
        for i in range(12, 14):
            _save(imgs[i], w / "new_photos" / f"{cls}{i}.jpg")
    # texts: 102 real UCI sentiment sentences (tests/data/README.md) as docs/text.md names them
    shutil.copy(Path(__file__).parent / "data" / "uci_sentiment_102.csv", w / "reviews.csv")
    rows = ["path,label"] + [f"{p.relative_to(w)},{p.parent.name}" for p in sorted((w / "photos").rglob("*.jpg"))]
    (w / "labels.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    cwd = os.getcwd()
    os.chdir(w)
    try:
        assert main(["featurize", "photos/", "test_photos/", "new_photos/", "--cache", "photos.h5", "-q"]) == 0
        assert main(["fit", "photos/", "--cache", "photos.h5", "--out", "model.joblib",
                     "--select", "none", "-q"]) == 0
    finally:
        os.chdir(cwd)
    return w


@pytest.fixture
def in_world(world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    here = tmp_path / "w"
    shutil.copytree(world, here, symlinks=True)
    monkeypatch.chdir(here)
    return here


# ------------------------------------------------------------------------------- running
def _commands(code: str) -> list[str]:
    """The block's command lines, backslash continuations joined."""
    return [c for c in code.replace("\\\n", " ").splitlines() if c.strip()]


def run_bash(code: str, where: Path) -> None:
    from deepfeat.cli.main import main

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for line in _commands(code):
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        if argv[0] == "deepfeat":
            assert main(argv[1:]) == 0, f"`{line.strip()}` failed"
        else:
            r = subprocess.run(["bash", "-euo", "pipefail", "-c", line], cwd=where, env=env,
                               capture_output=True, text=True, timeout=600)
            assert r.returncode == 0, f"`{line.strip()}` failed: {r.stderr[-2000:]}"


def run_python(code: str, name: str) -> None:
    exec(compile(code, name, "exec"), {"__name__": "__main__"})  # noqa: S102 - our own docs


@pytest.mark.parametrize("block", [_param(b) for b in BLOCKS])
@pytest.mark.usefixtures("own_global_rng")  # the examples build torch modules, as users do
def test_block_runs(block: Block, in_world: Path) -> None:
    if block.lang == "bash":
        run_bash(block.code, in_world)
    else:
        run_python(block.code, block.id)


# ------------------------------------------------------------------- the rules themselves
def test_every_code_block_says_what_it_is():
    """A fence without a language would escape this test: each is python, bash or text."""
    bare = [f"{p.relative_to(ROOT)}:{line}" for p in DOCUMENTS for line, lang, _, _ in _fences(p)
            if lang not in (*RUNNABLE, *SHOWN)]
    assert not bare, f"blocks without python/bash/text: {bare}"


def test_the_readme_runs_most_of_its_blocks_and_skips_with_reasons():
    readme = [b for b in BLOCKS if b.path.name == "README.md"]
    assert readme and all(b.reason for b in BLOCKS if b.mark)
    # the quick start is run (slow), not skipped
    assert any(b.mark == "slow" and "deepfeat fit photos/" in b.code for b in readme)


def test_a_failing_block_fails(tmp_path):
    """Negative controls: the runners do not swallow errors."""
    with pytest.raises(AssertionError, match="failed"):
        run_bash("false", tmp_path)
    with pytest.raises(AssertionError, match="failed"):
        run_bash(f"deepfeat cache verify {tmp_path / 'missing.h5'} -q", tmp_path)
    with pytest.raises(ZeroDivisionError):
        run_python("1 / 0", "control")


def test_marks_are_read_from_the_line_above_the_fence(tmp_path):
    doc = tmp_path / "d.md"
    doc.write_text("<!-- skip: needs internet -->\n```bash\nx\n```\n\ntext\n\n"
                   "<!-- slow: minutes -->\n\n```python\ny\n```\n```bash\nz\n```\n```text\nw\n```\n")
    got = [(b.lang, b.code, b.mark, b.reason) for b in collect([doc])]
    assert got == [("bash", "x", "skip", "needs internet"), ("python", "y", "slow", "minutes"),
                   ("bash", "z", None, "")]


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def broken_links(docs: list[Path]) -> list[str]:
    broken = []
    for doc in docs:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):
                continue  # http(s):, mailto:
            file, _, anchor = target.partition("#")
            dest = (doc.parent / file).resolve() if file else doc
            if not dest.exists():
                broken.append(f"{doc.name}: {target}")
            elif anchor and dest.suffix == ".md":
                heads = re.findall(r"^#+ (.+)$", dest.read_text(encoding="utf-8"), re.M)
                if anchor not in {_anchor(h) for h in heads}:
                    broken.append(f"{doc.name}: {target}")
    return broken


def test_links_between_the_pages_point_somewhere(tmp_path):
    """Moving sections between README and docs/ must not leave a link to nowhere."""
    assert not broken_links(DOCUMENTS)
    doc = tmp_path / "d.md"  # negative control
    doc.write_text("# Top part\n[a](d.md#top-part) [b](gone.md) [c](d.md#nowhere) [d](https://x.org)\n")
    assert broken_links([doc]) == ["d.md: gone.md", "d.md: d.md#nowhere"]
