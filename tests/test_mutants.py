"""scripts/mutants.py (make mutants) applies each named mistake by replacing a piece of text
that must appear exactly once in its file. A refactor that moves the code makes a mutant
stale, which the full harness only reports after minutes of test runs: check it here, in
milliseconds, on the working tree."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mutants():
    spec = importlib.util.spec_from_file_location("mutants_script", ROOT / "scripts" / "mutants.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.MUTANTS


@pytest.mark.parametrize("mutant", _mutants(), ids=lambda m: m.name)
def test_every_mutant_applies_to_exactly_one_place(mutant):
    text = (ROOT / mutant.path).read_text()
    assert text.count(mutant.old) == 1, f"{mutant.name}: its text appears {text.count(mutant.old)} times in {mutant.path}"
    assert mutant.new != mutant.old
    for argument in mutant.tests:
        if argument.startswith("tests/"):
            assert (ROOT / argument).is_file(), f"{mutant.name} names a missing test file {argument}"
