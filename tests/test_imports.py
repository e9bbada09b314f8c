"""The package's shape (HOUSE_STYLE.md): imports go one way, and Optuna and MLflow stay in their modules."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "cnnbench"

#: From the top down; a module may import its own layer and the layers below it, never one above.
LAYERS = [
    {"cli", "__main__"},
    {"sweep"},
    {"space", "train", "tracking", "report", "export", "storage", "plots", "catalog"},
    {"registry", "models", "optim", "data", "config", "errors", "paths", "cores", "__init__"},
]

#: Third-party packages only some modules may import.
OWNERS = {"optuna": {"sweep", "storage"}, "mlflow": {"tracking"}}


def imports(path: Path) -> set[str]:
    """Every top-level name ``path`` imports, anywhere in it (commands import inside functions), with
    cnnbench's own modules as ``cnnbench.NAME``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {".".join(alias.name.split(".")[:2]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "cnnbench":  # from cnnbench import sweep, __version__
                names |= {f"cnnbench.{alias.name}" for alias in node.names if not alias.name.startswith("__")}
            else:
                names.add(".".join(node.module.split(".")[:2]))
    return names


def layer(module: str) -> int:
    (index,) = [i for i, members in enumerate(LAYERS) if module in members]
    return index


MODULES = {path: path.stem if path.parent == PACKAGE else path.parent.name for path in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("path", sorted(MODULES), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_one_way_and_optuna_and_mlflow_stay_in_their_modules(path):
    module = MODULES[path]
    found = imports(path)
    upward = [name for name in found if name.startswith("cnnbench.") and layer(name.split(".")[1]) < layer(module)]
    assert not upward, f"{module} imports {upward}, above it"
    for package, owners in OWNERS.items():
        assert module in owners or not any(name.split(".")[0] == package for name in found), \
            f"{module} imports {package}; only {sorted(owners)} may"


def test_the_check_sees_an_import_inside_a_function(tmp_path):
    source = tmp_path / "mod.py"
    source.write_text("def f():\n    import optuna.trial\n    from cnnbench import sweep as s\n")
    assert imports(source) == {"optuna.trial", "cnnbench.sweep"}
