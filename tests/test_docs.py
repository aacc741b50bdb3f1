"""Every ```python block of README.md and docs/**/*.md runs as written: each in a fresh
interpreter, from an empty folder that holds only what the block names (the shipped
checkpoints/ and any other repository path it mentions, linked; a generated photo for each
image file name it mentions that is not in the repository), with the Imagenette pack
reachable through RESATTN_DATA when it is present."""
from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
BLOCK_TIMEOUT_S = 600


def python_blocks(text: str) -> list[tuple[int, str]]:
    """(line number of the opening fence, code) of every fenced block tagged `python`."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        body, j = [], i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence[0] * len(fence))
                                      and set(lines[j].strip()) == {fence[0]}):
            line = lines[j]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            j += 1
        if opening["lang"] == "python":
            blocks.append((i + 1, "\n".join(body) + "\n"))
        i = j + 1
    return blocks


BLOCKS = [(path, line, code) for path in DOCS for line, code in python_blocks(path.read_text())]


def string_literals(code: str) -> set[str]:
    return {node.value for node in ast.walk(ast.parse(code)) if isinstance(node, ast.Constant)
            and isinstance(node.value, str)}


def generated_photo(path: Path) -> None:
    """A photo-like generated image (no file of the Imagenette pack): a scikit-image photo
    when scikit-image is there, else smooth colour gradients with a few shapes."""
    try:
        import skimage.data

        image = Image.fromarray(skimage.data.chelsea())
    except ImportError:
        yy, xx = np.mgrid[0:240, 0:320]
        array = np.stack([xx * 255 // 319, yy * 255 // 239, (xx + yy) * 255 // 558], -1).astype(np.uint8)
        array[60:180, 100:220] = (200, 60, 40)
        image = Image.fromarray(array)
    image.save(path)


def prepare_folder(folder: Path, code: str) -> None:
    """What the block names and nothing else: each relative path that exists in the
    repository is linked by its top-level entry (checkpoints/ always, the usual one); each
    image file name that does not is a generated photo."""
    names = {"checkpoints/"} | string_literals(code)
    for name in sorted(names):
        if not name or "\n" in name or os.path.isabs(name) or len(name) > 200:
            continue
        relative = Path(name)
        try:
            exists = (ROOT / relative).exists()
        except OSError:  # not a path (e.g. a long sentence)
            continue
        if exists and relative.parts and relative.parts[0] not in ("..", "."):
            top = relative.parts[0]
            if not (folder / top).exists():
                (folder / top).symlink_to(ROOT / top)
        elif relative.suffix.lower() in IMAGE_SUFFIXES and not (folder / relative).exists():
            (folder / relative).parent.mkdir(parents=True, exist_ok=True)
            generated_photo(folder / relative)


def run_block(code: str, folder: Path) -> subprocess.CompletedProcess:
    (folder / "_doc_block.py").write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESATTN_")}
    env.update(PYTHONPATH=str(ROOT), MPLBACKEND="Agg", PYTHONDONTWRITEBYTECODE="1")
    sys.path.insert(0, str(ROOT))
    try:
        from resattn.data import find_pack, pack_available

        if pack_available():
            env["RESATTN_DATA"] = str(find_pack())
    finally:
        sys.path.remove(str(ROOT))
    env.setdefault("RESATTN_CACHE", str(folder / ".cache"))
    return subprocess.run([sys.executable, "_doc_block.py"], cwd=folder, env=env, capture_output=True, text=True,
                          timeout=BLOCK_TIMEOUT_S)


@pytest.mark.parametrize("path,line,code", BLOCKS,
                         ids=[f"{p.relative_to(ROOT)}:{line}" for p, line, _ in BLOCKS])
def test_python_block_runs_as_written(path, line, code, tmp_path):
    folder = tmp_path / "empty"
    folder.mkdir()
    prepare_folder(folder, code)
    done = run_block(code, folder)
    where = f"{path.relative_to(ROOT)}, block at line {line}"
    assert done.returncode == 0, f"{where} failed:\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"{where} printed a traceback:\n{done.stderr[-3000:]}"


def test_the_readme_example_is_found_and_prints_every_module(tmp_path):
    """The parser finds the README's example (so the test above cannot pass by running
    nothing), and the example prints one line per attention module and a class of the card."""
    import json

    readme = [code for path, _, code in BLOCKS if path.name == "README.md" and path.parent == ROOT]
    assert readme and "resattn.trace" in readme[0]
    folder = tmp_path / "empty"
    folder.mkdir()
    prepare_folder(folder, readme[0])
    assert (folder / "photo.jpg").is_file() and (folder / "checkpoints").is_symlink()
    done = run_block(readme[0], folder)
    assert done.returncode == 0, done.stderr[-3000:]
    card = json.loads((ROOT / "checkpoints" / "attention56_mixed_arl.json").read_text())
    lines = done.stdout.strip().splitlines()
    assert [line.split()[0] for line in lines[:-1]] == ["stage1.1", "stage2.1", "stage3.1"]
    assert lines[-1] in card["classes"]


def test_a_failing_block_fails(tmp_path):
    """The runner sees an error as an error: the README's example as it was before
    `import resattn` exposed resattn.data (AttributeError) is reported, not passed."""
    broken = "import resattn\nresattn.no_such_module.preprocess\n"
    done = run_block(broken, tmp_path)
    assert done.returncode != 0 and "AttributeError" in done.stderr


def test_fence_parsing():
    text = ("intro\n```python\nprint(1)\n```\n```bash\nls\n```\n````markdown\n```python\nnot code\n```\n````\n"
            "- item\n\n  ```python\n  x = 2\n  print(x)\n  ```\n")
    assert python_blocks(text) == [(2, "print(1)\n"), (15, "x = 2\nprint(x)\n")]
