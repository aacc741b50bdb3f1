"""pyproject.toml: the dependencies agree with the pinned requirement files, the console scripts
name real entry points, package discovery finds every package, the app's files are all
installed, and `pip install .` into a fresh venv gives working `resattn-*` commands (slow)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from importlib import import_module
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from setuptools import find_packages

from resattn_app.serving import ServerNotHealthy, free_port, wait_until_healthy

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SCRIPTS = ["resattn-train", "resattn-evaluate", "resattn-report", "resattn-bench", "resattn-app"]
EXACT = {"torch", "torchvision"}  # pinned in pyproject.toml exactly as in requirements.txt (see its comment)


def pinned(path: Path) -> dict[str, str]:
    """{canonical name: version} of a requirements file's `name==version` lines (`-r` and
    comments skipped)."""
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement = Requirement(line)
        (spec,) = requirement.specifier
        assert spec.operator == "==", f"{path.name}: {line} is not pinned"
        pins[canonicalize_name(requirement.name)] = spec.version
    return pins


def declared(requirements: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, requirements)}


@pytest.mark.parametrize("requirements_file,where", [
    ("requirements.txt", ("dependencies",)),
    ("requirements-dev.txt", ("optional-dependencies", "dev")),
])
def test_declared_dependencies_agree_with_the_pins(requirements_file, where):
    """Each pinned package is declared and each declared one pinned, and every pin satisfies
    the declared range: `make run` (requirements.txt) and `pip install .` install the same set."""
    pins = pinned(ROOT / requirements_file)
    if requirements_file == "requirements-dev.txt":  # it starts with `-r requirements.txt`
        pins = {name: v for name, v in pins.items() if name not in pinned(ROOT / "requirements.txt")}
    section = PYPROJECT["project"]
    for key in where:
        section = section[key]
    ranges = declared(section)
    assert sorted(ranges) == sorted(pins), f"pyproject.toml and {requirements_file} list different packages"
    for name, version in pins.items():
        assert ranges[name].specifier.contains(version), f"{name}=={version} is outside {ranges[name]}"
        if name in EXACT or requirements_file == "requirements-dev.txt":
            assert str(ranges[name].specifier) == f"=={version}", f"{name} must be pinned as in {requirements_file}"


def test_console_scripts_name_the_command_line_mains():
    scripts = PYPROJECT["project"]["scripts"]
    assert sorted(scripts) == sorted(SCRIPTS)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert callable(getattr(import_module(module), function)), f"{name} -> {target}"


def test_package_discovery_finds_every_package():
    """Every folder of resattn/ that holds Python files is a package (namespaces are off, so one
    without __init__.py would be left out of the wheel) and the find directive includes it."""
    find = PYPROJECT["tool"]["setuptools"]["packages"]["find"]
    found = set(find_packages(str(ROOT), include=find["include"]))
    folders = {path.parent for path in (ROOT / "resattn").rglob("*.py") if "__pycache__" not in path.parts}
    for folder in folders:
        assert (folder / "__init__.py").is_file(), f"{folder.relative_to(ROOT)} has no __init__.py"
    expected = {".".join(folder.relative_to(ROOT).parts) for folder in folders} | {"resattn_app"}
    assert found == expected


def app_files(root: Path) -> set[str]:
    """The files the installed app needs, relative to the app folder."""
    files = {"app.py", ".streamlit/config.toml"}
    for folder in ("pages", "ui"):
        files |= {p.relative_to(root).as_posix() for p in (root / folder).rglob("*.py") if "__pycache__" not in p.parts}
    return files


def test_data_files_carry_every_app_file():
    """[tool.setuptools.data-files] installs each file of app.py, pages/ and ui/ at its own place
    under share/resattn/app (a new sub-folder of ui/ needs its own line there)."""
    installed = set()
    for target, patterns in PYPROJECT["tool"]["setuptools"]["data-files"].items():
        assert target.startswith("share/resattn/app")
        prefix = target.removeprefix("share/resattn/app").strip("/")
        for pattern in patterns:
            for path in ROOT.glob(pattern):
                folder = path.parent.relative_to(ROOT).as_posix()
                assert (folder if folder != "." else "") == prefix, f"{pattern} -> {target}"
                installed.add(path.relative_to(ROOT).as_posix())
    assert installed == app_files(ROOT)


def test_the_launcher_says_what_to_do_when_the_app_is_missing(monkeypatch, capsys):
    import resattn_app

    monkeypatch.setattr(resattn_app, "_complete", lambda folder: False)
    assert resattn_app.main(["--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install ." in err and "Traceback" not in err


def test_the_launcher_runs_the_checkout_app_with_absolute_folders(monkeypatch, tmp_path):
    import resattn_app

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RESATTN_DATA", "pack.npz")
    args, extra = resattn_app.parse_args(["--port", "8999", "--checkpoints", "zoo", "--server.address", "0.0.0.0"])
    command, folder, env = resattn_app.launch_plan(args, extra)
    assert folder == ROOT and command[1:5] == ["-m", "streamlit", "run", str(ROOT / "app.py")]
    assert command[5:] == ["--server.port", "8999", "--server.address", "0.0.0.0"]
    assert env["RESATTN_CHECKPOINTS"] == str(tmp_path.resolve() / "zoo")
    assert env["RESATTN_DATA"] == str(tmp_path.resolve() / "pack.npz")


# --------------------------------------------------------------------------- pip install .

# What a source checkout holds that the build must not see: large or generated folders (the
# weights, runs, the venv) and build leftovers (a stale build/lib would put removed modules
# back into the wheel).
NOT_COPIED = shutil.ignore_patterns(".git", ".venv", "runs", "plans", "checkpoints", "docs", "tests", "scripts",
                                    "deploy", "test-artifacts", "build", "*.egg-info", "__pycache__", ".*_cache",
                                    ".hypothesis", ".stamp-*")


def _run(command: list, cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, command))} failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_pip_install_gives_working_commands(tmp_path):
    """`pip install .` into a fresh venv, then every `resattn-*` command from an empty folder.

    No download: the machine reaches only the package registry, and a full resolve into a bare
    venv would fetch torch and CUDA wheels (several GB). So the fresh venv (made without pip,
    without system site-packages) gets one .pth line that puts the project venv's
    site-packages on its path, and `pip install --no-index --no-build-isolation .` runs there:
    pip still resolves every declared dependency, finds each one already satisfied by the
    tested versions (a range the project venv does not satisfy fails: --no-index cannot fetch),
    builds the wheel with that setuptools, and installs resattn, resattn_app, the scripts and
    the app's files into the fresh venv only. The build runs on a copy of the source files so
    that no build/ or egg-info lands in the checkout. It takes about 20 s of CPU, most of it the
    five commands importing torch and Streamlit starting (80 s of wall time measured at nice 10
    while a training sweep held both cores).
    """
    import setuptools

    (backend,) = map(Requirement, PYPROJECT["build-system"]["requires"])
    assert backend.specifier.contains(setuptools.__version__), (
        f"setuptools {setuptools.__version__} here does not meet the build's {backend}: "
        f"`.venv/bin/pip install -U setuptools` (--no-build-isolation builds with this one)")
    source, venv, empty = tmp_path / "source", tmp_path / "venv", tmp_path / "empty"
    shutil.copytree(ROOT, source, ignore=NOT_COPIED)
    empty.mkdir()
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, dict(os.environ))
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH" and not k.startswith("RESATTN_")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PYTHONDONTWRITEBYTECODE="1")
    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], empty, env)
                .stdout.strip())
    (site / "project_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    _run([python, "-m", "pip", "install", "--no-index", "--no-build-isolation", source], empty, env)

    # The library comes from the fresh venv, not from this checkout.
    where = _run([python, "-c", "import resattn, resattn_app; print(resattn.__file__); print(resattn_app.__file__)"],
                 empty, env).stdout.split()
    assert all(Path(w).is_relative_to(site) for w in where), where
    # Only the two packages land in site-packages: the app's `ui`, `pages` and `app` stay out of
    # everyone's import path, and no tests/ or scripts/ come along.
    installed = {p.name for p in site.iterdir() if not p.name.endswith((".dist-info", ".pth")) and p.name != "__pycache__"}
    assert installed == {"resattn", "resattn_app"}, installed
    for script in SCRIPTS:
        done = _run([venv / "bin" / script, "--help"], empty, env)
        assert done.stdout.startswith("usage:"), f"{script} --help:\n{done.stdout[:500]}"

    # The app's files are installed beside each other, all of them, and the launcher finds them.
    plan = _run([venv / "bin" / "resattn-app", "--dry-run"], empty, env).stdout
    folder = Path(plan.splitlines()[0].removeprefix("app folder: "))
    assert folder.is_relative_to(venv) and folder.parts[-3:] == ("share", "resattn", "app"), plan
    assert app_files(folder) == app_files(ROOT)
    assert f"streamlit run {folder / 'app.py'}" in plan

    # It starts: Streamlit serves the installed app.py (checkpoints from this checkout).
    port = free_port()
    log = (tmp_path / "app.log").open("w")
    app = subprocess.Popen([venv / "bin" / "resattn-app", "--port", str(port), "--checkpoints", ROOT / "checkpoints",
                            "--server.address", "127.0.0.1"], cwd=empty, env=env, stdout=log,
                           stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            wait_until_healthy(f"http://127.0.0.1:{port}", app, timeout=60)
        except ServerNotHealthy as exc:
            pytest.fail(f"{exc}:\n{(tmp_path / 'app.log').read_text()[-3000:]}")
    finally:
        try:
            os.killpg(app.pid, 15)  # the launcher and its streamlit child
        except ProcessLookupError:
            pass
        app.wait(timeout=30)
        log.close()
    assert "Traceback" not in (tmp_path / "app.log").read_text()
