"""The one code-hash function: what counts is code, and the modules code imports."""

from gamerec_assets.core.codehash import (
    code_fingerprint,
    code_versions,
    import_closure,
    modules_fingerprint,
    project_imports,
)
from gamerec_assets.core.training import state


def test_fingerprints_ignore_comments_docstrings_and_formatting_but_not_code():
    original = (
        '"""Module doc."""\n\n\ndef score(x):\n    """Doc."""\n    return x + 1  # a comment\n'
    )
    reworded = (
        '"""Another doc."""\n# a new comment\ndef score( x ):\n    """Other."""\n    return x + 1\n'
    )
    assert code_fingerprint(original) == code_fingerprint(reworded)
    assert code_fingerprint(original) != code_fingerprint(original.replace("x + 1", "x + 2"))


def test_imports_are_found_without_importing_absolute_and_relative():
    imports = project_imports("gamerec_assets.core.training.loop")
    assert {
        "gamerec_assets.core.model",
        "gamerec_assets.core.metrics",
        "gamerec_assets.core.training.loss",
        "gamerec_assets.core.training.world",
    } <= imports
    assert not any(name.endswith(".TwoTower") for name in imports)  # names are not modules
    assert all(name.startswith("gamerec_assets") for name in imports)  # torch is not ours


def test_the_closure_follows_imports_of_imports():
    closure = import_closure(("gamerec_assets.core.training.loop",))
    assert "gamerec_assets.core.settings" in closure  # loop -> model -> settings
    assert "gamerec_assets.core.index" not in closure
    assert set(code_versions(["gamerec_assets.core.training.loop"])) == set(closure)


def test_resuming_and_versions_hash_training_code_the_same_way():
    """A saved training state is keyed by the fingerprint of the same modules a version
    counts for the training loop."""
    assert modules_fingerprint(state.TRAINING_CODE) == modules_fingerprint(
        ["gamerec_assets.core.training.loop"]
    )
    assert "gamerec_assets.core.training.state" in import_closure(state.TRAINING_CODE)
