"""The import rules of docs/architecture.md, read from the code with `ast` (never a regex on
the text), and each rule shown to catch a deliberately bad file.

    library    nothing under resattn/ imports streamlit, ui, pages, app or resattn_app: not
               at the top, not inside a function, not through importlib.import_module /
               __import__ of a constant name, and not in a string constant that is Python code
               (a program handed to `python -c` or written out and run: the old bench probe)
    core       resattn.model, resattn.hooks and resattn.trace import from resattn only one
               another and resattn.errors: what the network is and what it did on one input
               know nothing of checkpoints, analysis, figures or the command lines
    viz        resattn.viz imports no torch, torchvision or captum and nothing of the model,
               hooks, trace, card, checkpoints or data: numbers and arrays in, figures out
    pages      pages/ and app.py import no torch, torchvision, captum or scipy: a page reads
               the settings, asks resattn (through ui/) and draws
    ui         ui/ imports no torchvision, captum or scipy, and of torch it names only
               UI_TORCH: types, dtypes, grad mode, and moving data in (from_numpy, as_tensor,
               cat, stack); no torch.nn.functional, no softmax, no interpolate
    card       ui/, pages/ and app.py read a model card by its typed fields (`card.attention`),
               never as a dict (`card["attention"]`, `card.get("attention")`): one spelling,
               checked once by the ModelCard dataclass, instead of keys and defaults per page
    launcher   resattn_app imports the standard library only (`resattn-app --help` is instant;
               Streamlit runs in a child process)

What `ast` cannot see, and no rule claims: methods called on a tensor (`x.softmax(0)`: the
type of `x` is not in the syntax tree) and numpy arithmetic (pages and ui turn results into
arrays for the figures, and numpy is not policed).
"""
from __future__ import annotations

import ast
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

APP_SIDE = ("streamlit", "ui", "pages", "app", "resattn_app")
CORE = ("resattn.model", "resattn.hooks", "resattn.trace")
CORE_MAY_IMPORT = CORE + ("resattn.errors",)
MODEL_LIBRARIES = ("torch", "torchvision", "captum")
VIZ_MUST_NOT_IMPORT = MODEL_LIBRARIES + ("resattn.model", "resattn.hooks", "resattn.trace", "resattn.checkpoints",
                                         "resattn.card", "resattn.data")
PAGES_MUST_NOT_IMPORT = MODEL_LIBRARIES + ("scipy",)
UI_MUST_NOT_IMPORT = ("torchvision", "captum", "scipy", "torch.nn.functional")
UI_TORCH = {
    "torch.Tensor", "torch.nn.Module", "torch.device", "torch.dtype",  # types: annotations, isinstance
    "torch.float32", "torch.float16", "torch.bfloat16", "torch.uint8",  # dtypes
    "torch.channels_last", "torch.contiguous_format",  # memory layouts
    "torch.no_grad", "torch.inference_mode",  # the app never trains
    "torch.from_numpy", "torch.as_tensor", "torch.cat", "torch.stack",  # data in, batched
}


@dataclass(frozen=True)
class Violation:
    path: str
    line: int
    rule: str
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what} [{self.rule}]"


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    """`name` is one of the dotted module names in `prefixes` or inside one of them."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _dotted(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return inner and f"{inner}.{node.attr}"
    return None


def imports(tree: ast.AST, package: str = "") -> Iterator[tuple[int, str]]:
    """(line, dotted module name) of every import in `tree`, at any depth. `from a import b`
    gives a and a.b (b may be a module); relative imports are resolved against `package`;
    importlib.import_module / __import__ of a constant name count as imports."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - (node.level - 1)] if package else []
                base = ".".join(parent + ([node.module] if node.module else []))
            if base:
                yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}" if base else alias.name
        elif (isinstance(node, ast.Call) and _dotted(node.func) in ("importlib.import_module", "import_module",
                                                                      "__import__")
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            yield node.lineno, node.args[0].value


def code_strings(tree: ast.AST) -> Iterator[tuple[int, ast.Module]]:
    """Each string constant (or f-string, its fields read as names) that parses as Python and
    imports something: a program the file hands to another interpreter."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "_" for v in node.values)
        else:
            continue
        if "import" not in text:
            continue
        try:
            inner = ast.parse(textwrap.dedent(text))
        except (SyntaxError, ValueError):
            continue
        if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(inner)):
            yield node.lineno, inner


def torch_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, dotted name) of every use of torch: the longest `torch.a.b` chain at each use of
    a name bound to torch or to something imported from it (`from torch import nn` makes
    `nn.Module` read torch.nn.Module)."""
    bound: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if within(alias.name, ("torch",)):
                    bound[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else "torch"
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and within(node.module or "", ("torch",)):
            for alias in node.names:
                bound[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id in bound:
            name, outer = bound[node.id], node
            while isinstance(parents.get(outer), ast.Attribute) and parents[outer].value is outer:
                outer = parents[outer]
                name = f"{name}.{outer.attr}"
            yield node.lineno, name


def _is_card(node: ast.AST) -> bool:
    return (isinstance(node, ast.Name) and node.id == "card") or (isinstance(node, ast.Attribute) and node.attr == "card")


def card_lookups(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, text) of every read of a card as a dict: `card["k"]`, `x.card["k"]`, `card.get("k")`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and _is_card(node.value):
            yield node.lineno, f"card[{ast.unparse(node.slice)}]"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and _is_card(node.func.value)):
            yield node.lineno, f"card.get({', '.join(ast.unparse(a) for a in node.args)})"


def check_file(path: Path, root: Path) -> list[Violation]:
    """Every rule that applies to `path` (a file of the repository rooted at `root`)."""
    relative = path.relative_to(root).as_posix()
    module = module_name(path, root)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=relative)
    found = list(imports(tree, package))
    out: list[Violation] = []

    def flag(line: int, rule: str, what: str) -> None:
        out.append(Violation(relative, line, rule, what))

    if within(module, ("resattn",)):
        for line, name in found:
            if within(name, APP_SIDE):
                flag(line, "library", f"imports {name}")
        for line, program in code_strings(tree):
            for _, name in imports(program):
                if within(name, APP_SIDE):
                    flag(line, "library", f"a code string imports {name}")
    if within(module, CORE):
        for line, name in found:
            if within(name, ("resattn",)) and name != "resattn" and not within(name, CORE_MAY_IMPORT):
                flag(line, "core", f"imports {name}")
    if within(module, ("resattn.viz",)):
        for line, name in found:
            if within(name, VIZ_MUST_NOT_IMPORT):
                flag(line, "viz", f"imports {name}")
    if within(module, ("pages", "app")):
        for line, name in found:
            if within(name, PAGES_MUST_NOT_IMPORT):
                flag(line, "pages", f"imports {name}")
    if within(module, ("ui",)):
        for line, name in found:
            if within(name, UI_MUST_NOT_IMPORT):
                flag(line, "ui", f"imports {name}")
        for line, name in torch_uses(tree):
            if name not in UI_TORCH:
                flag(line, "ui", f"uses {name}")
    if within(module, ("ui", "pages", "app")):
        for line, text in card_lookups(tree):
            flag(line, "card", f"reads {text}")
    if within(module, ("resattn_app",)):
        for line, name in found:
            top = name.split(".")[0]
            if top not in sys.stdlib_module_names and not within(name, ("resattn_app",)):
                flag(line, "launcher", f"imports {name}")
    first = {}  # one violation per line and rule: `from a.b import c` names both a.b and a.b.c
    for v in out:
        first.setdefault((v.line, v.rule), v)
    return sorted(first.values(), key=lambda v: (v.line, v.rule))


def checked_files(root: Path) -> list[Path]:
    files = [root / "app.py"] if (root / "app.py").is_file() else []
    for folder in ("resattn", "ui", "pages", "resattn_app"):
        files += sorted(p for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def violations(root: Path) -> list[Violation]:
    return [v for path in checked_files(root) for v in check_file(path, root)]


# --------------------------------------------------------------------------- the repository


# Lines that broke a rule when the rules were written, while issue 17's redesign was moving
# them (preprocessing into the card, figure data and caches out of the pages): (path, rule,
# what). A ratchet: any other violation fails, and so does an entry here that no longer
# happens, so the list only shrinks. Empty is the goal.
KNOWN: set[tuple[str, str, str]] = set()


def test_the_repository_keeps_the_import_rules():
    files = checked_files(ROOT)
    assert len(files) > 50 and any(f.parts[-2:] == ("model", "attention.py") for f in files)
    found = violations(ROOT)
    new = [v for v in found if (v.path, v.rule, v.what) not in KNOWN]
    assert not new, "import rules broken (docs/architecture.md):\n" + "\n".join(map(str, new))
    fixed = KNOWN - {(v.path, v.rule, v.what) for v in found}
    assert not fixed, f"no longer broken, remove from KNOWN: {sorted(fixed)}"


# --------------------------------------------------------------------------- each rule can fail


def write(root: Path, relative: str, code: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for parent in path.relative_to(root).parents:
        if parent.parts and parent.parts[0] in ("resattn", "ui", "resattn_app"):
            (root / parent / "__init__.py").touch()
    path.write_text(textwrap.dedent(code))
    return path


def rules_broken(root: Path, relative: str, code: str) -> list[tuple[str, str]]:
    path = write(root, relative, code)
    return [(v.rule, v.what) for v in check_file(path, root)]


@pytest.mark.parametrize("code,what", [
    ("import streamlit as st\n", "imports streamlit"),
    ("def page():\n    from ui import state\n", "imports ui"),
    ("from pages import overview\n", "imports pages"),
    ("import importlib\nst = importlib.import_module('streamlit')\n", "imports streamlit"),
    ("PROBE = '''\nimport streamlit as st\nst.write(1)\n'''\n", "a code string imports streamlit"),
    ("import sys\nCODE = f'import sys; sys.path.insert(0, {sys.prefix!r}); from ui import cache'\n",
     "a code string imports ui"),
])
def test_library_rule_catches_a_bad_file(tmp_path, code, what):
    assert ("library", what) in rules_broken(tmp_path, "resattn/bad.py", code)


def test_library_rule_lets_prose_and_the_library_through(tmp_path):
    good = '''\
        """resattn never imports streamlit; the app's probe runs as `python -m ui.bench_probe`."""
        import subprocess
        import sys

        from . import errors
        from .model import create_model

        def probe():
            return subprocess.run([sys.executable, "-m", "ui.bench_probe"], check=True)
        '''
    assert rules_broken(tmp_path, "resattn/good.py", good) == []


@pytest.mark.parametrize("relative,code,what", [
    ("resattn/model/bad.py", "from ..analysis import agreement\n", "imports resattn.analysis"),
    ("resattn/trace.py", "from .checkpoints import load_checkpoint\n", "imports resattn.checkpoints"),
    ("resattn/hooks.py", "import resattn.viz\n", "imports resattn.viz"),
])
def test_core_rule_catches_a_bad_file(tmp_path, relative, code, what):
    assert ("core", what) in rules_broken(tmp_path, relative, code)
    assert rules_broken(tmp_path, "resattn/trace.py", "from .hooks import forward_hooks\nfrom .model import x\n") == []


@pytest.mark.parametrize("relative,code,what", [
    ("resattn/viz/bad.py", "import torch\n", "imports torch"),
    ("resattn/viz/bad.py", "from ..trace import trace\n", "imports resattn.trace"),
    ("resattn/viz/bad.py", "def f():\n    from resattn.model import create_model\n", "imports resattn.model"),
])
def test_viz_rule_catches_a_bad_file(tmp_path, relative, code, what):
    assert ("viz", what) in rules_broken(tmp_path, relative, code)
    assert rules_broken(tmp_path, "resattn/viz/good.py", "import numpy as np\nfrom .colour import scale\n") == []


@pytest.mark.parametrize("relative,code,what", [
    ("pages/bad.py", "import torch\n", "imports torch"),
    ("pages/bad.py", "import torch.nn.functional as F\n", "imports torch.nn.functional"),
    ("pages/bad.py", "from scipy import stats\n", "imports scipy"),
    ("app.py", "def go():\n    from captum.attr import Saliency\n", "imports captum.attr"),
])
def test_pages_rule_catches_a_bad_file(tmp_path, relative, code, what):
    assert ("pages", what) in rules_broken(tmp_path, relative, code)
    good = "import numpy as np\nimport streamlit as st\nfrom resattn import viz\nfrom ui import state\n"
    assert rules_broken(tmp_path, "pages/good.py", good) == []


@pytest.mark.parametrize("relative,code,what", [
    ("pages/bad.py", "card = app.entry.card\nif card.get('attention') == 'none':\n    pass\n",
     "reads card.get('attention')"),
    ("ui/bad.py", "def names(entry):\n    return list(entry.card['classes'])\n", "reads card['classes']"),
    ("app.py", "label = app.entry.card.get('residual', 'arl')\n", "reads card.get('residual', 'arl')"),
])
def test_card_rule_catches_a_bad_file(tmp_path, relative, code, what):
    assert ("card", what) in rules_broken(tmp_path, relative, code)
    good = "card = app.entry.card\nif card.attention == 'none' and card.metrics.get('val_top1'):\n    names = card.classes\n"
    assert rules_broken(tmp_path, "pages/good.py", good) == []


@pytest.mark.parametrize("code,what", [
    ("import torch\np = torch.softmax(logits, 0)\n", "uses torch.softmax"),
    ("import torch\nwith torch.no_grad():\n    y = torch.nn.functional.interpolate(x, 8)\n",
     "uses torch.nn.functional.interpolate"),
    ("from torch.nn import functional as F\n", "imports torch.nn.functional"),
    ("from torch import sigmoid\ny = sigmoid(x)\n", "uses torch.sigmoid"),
    ("import torch as T\ny = T.topk(x, 5)\n", "uses torch.topk"),
    ("from torchvision.transforms import v2\n", "imports torchvision.transforms"),
])
def test_ui_rule_catches_a_bad_file(tmp_path, code, what):
    assert ("ui", what) in rules_broken(tmp_path, "ui/bad.py", code)


def test_ui_rule_lets_types_and_data_plumbing_through(tmp_path):
    good = '''\
        import torch
        from torch import nn

        def run(model: nn.Module, arrays) -> torch.Tensor:
            x = torch.cat([torch.from_numpy(a) for a in arrays]).to(torch.float32)
            with torch.inference_mode():
                return model(x)
        '''
    assert rules_broken(tmp_path, "ui/good.py", good) == []


def test_launcher_rule_catches_a_bad_file(tmp_path):
    assert ("launcher", "imports streamlit.web") in rules_broken(tmp_path, "resattn_app/bad.py",
                                                                     "from streamlit.web import cli\n")
    assert ("launcher", "imports resattn") in rules_broken(tmp_path, "resattn_app/bad.py", "import resattn\n")
    assert rules_broken(tmp_path, "resattn_app/good.py", "import subprocess\nfrom . import main\n") == []


def test_a_bad_file_fails_the_repository_check(tmp_path):
    """The repository-wide collection sees a file added anywhere under the checked folders."""
    write(tmp_path, "resattn/model/good.py", "from ..errors import ResattnError\n")
    assert violations(tmp_path) == []
    write(tmp_path, "resattn/analysis/deep/bad.py", "def f():\n    import streamlit\n")
    assert [(v.path, v.line, v.rule) for v in violations(tmp_path)] == [
        ("resattn/analysis/deep/bad.py", 2, "library")]


MAX_LINES = 400  # issue 17: a newcomer reads any one file of the app and library in one sitting


def long_files(root: Path) -> list[str]:
    return sorted(f"{path.relative_to(root)}: {n} lines" for folder in ("resattn", "ui", "pages")
                  for path in (root / folder).rglob("*.py")
                  if (n := len(path.read_text().splitlines())) > MAX_LINES)


def test_no_file_of_the_library_or_the_app_grows_past_400_lines(tmp_path):
    assert long_files(ROOT) == []
    (tmp_path / "ui").mkdir()
    (tmp_path / "ui" / "grown.py").write_text("x = 1\n" * (MAX_LINES + 1))
    (tmp_path / "ui" / "fine.py").write_text("x = 1\n" * MAX_LINES)
    assert long_files(tmp_path) == ["ui/grown.py: 401 lines"]
