"""The dependency groups in pyproject.toml follow the code (issue #16).

Each image installs only its program's groups (`[tool.mlops.images]`, read by images/build.sh),
so a library a program imports but its group lacks would fail only at run time, in a pod. These
tests walk the syntax tree of each program's package and of every contract module it reaches
(imports inside functions included: they run too, only later) and check that each third-party
module comes from a distribution the program's groups declare directly (not merely one that
happens to come along with another). Imports under `if TYPE_CHECKING:` never run and are skipped.

They also hold the lean images to their promise (`never` in `[tool.mlops.images.<program>]`):
the whole closure of the operator's groups carries no numpy, scikit-learn, scipy, pandas, pyarrow
or kubernetes client; the server's no pyarrow, kopf, kubernetes or boto3; the trainer's no kopf or
kubernetes. And `dev` (what the Makefile installs) covers every group, so the tests see each
program's libraries.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
DIST = PYPROJECT["project"]["name"]
IMAGES: dict[str, list[str]] = {
    p: image["groups"] for p, image in PYPROJECT["tool"]["mlops"]["images"].items()
}
NEVER: dict[str, set[str]] = {
    p: set(image["never"]) for p, image in PYPROJECT["tool"]["mlops"]["images"].items()
}
PACKAGES = {
    "mlops_contract": ROOT / "operator" / "mlops_contract",
    "mlops_operator": ROOT / "operator" / "mlops_operator",
    "mlops_trainer": ROOT / "images" / "trainer" / "mlops_trainer",
    "mlops_server": ROOT / "images" / "server" / "mlops_server",
}
# Per program, (module, distribution) pairs its code can import that its image deliberately lacks,
# with the reason. Each is imported inside a function (checked below) that the program never
# calls, and declared by the groups the Makefile installs for development (`dev`, `s3`).
OUTSIDE_THE_IMAGE: dict[str, dict[tuple[str, str], str]] = {
    "operator": {
        ("mlops_operator.kube", "kubernetes"): "kube.Kube, the synchronous client of tests and tools",
        ("mlops_contract.storage", "boto3"): "s3:// transfers, which only the trainer makes (the "
        "operator's builders only parse URIs)",
        ("mlops_contract.storage", "botocore"): "the same s3:// client's configuration",
    },
    "trainer": {},
    "server": {},
}


def module_file(module: str) -> Path | None:
    top, _, rest = module.partition(".")
    base = PACKAGES.get(top)
    if base is None:
        return None
    path = base.joinpath(*rest.split(".")) if rest else base
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _type_checking_only(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and (
        (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
        or (isinstance(node.test, ast.Attribute) and node.test.attr == "TYPE_CHECKING")
    )


def imports(tree: ast.AST) -> Iterator[tuple[str, bool]]:
    """(imported module, inside a function) for every import statement that can run."""

    def walk(node: ast.AST, in_function: bool) -> Iterator[tuple[str, bool]]:
        for child in ast.iter_child_nodes(node):
            if _type_checking_only(child):
                assert isinstance(child, ast.If)
                for other in child.orelse:
                    yield from walk(other, in_function)
                continue
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, in_function
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                yield child.module, in_function
                # `from mlops_contract import arrayplan` imports a submodule
                for alias in child.names:
                    yield f"{child.module}.{alias.name}", in_function
            yield from walk(
                child, in_function or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
            )

    yield from walk(tree, False)


def third_party_imports(program: str) -> dict[tuple[str, str], bool]:
    """{(our module, third-party top-level module): only inside functions} for a program and the
    contract modules it reaches."""
    package = f"mlops_{program}"
    todo = [
        ".".join((package, *p.relative_to(PACKAGES[package]).with_suffix("").parts)).removesuffix(".__init__")
        for p in PACKAGES[package].rglob("*.py")
    ]
    seen: set[str] = set()
    found: dict[tuple[str, str], bool] = {}
    while todo:
        module = todo.pop()
        if module in seen:
            continue
        seen.add(module)
        path = module_file(module)
        if path is None:
            continue
        # Importing a.b.c runs a/__init__.py and a/b/__init__.py first.
        parts = module.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        for name, in_function in imports(ast.parse(path.read_text(), str(path))):
            top = name.partition(".")[0]
            if top in PACKAGES:
                if top == package or top == "mlops_contract":
                    todo.append(name)
                continue  # another program: forbidden by import-linter, not our concern here
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            key = (module, top)
            found[key] = found.get(key, True) and in_function
    return found


def requirements(dist: str, extras: set[str]) -> list[Requirement]:
    """The direct requirements of `dist` with `extras` (its base dependencies included): ours from
    pyproject.toml (the installed metadata may be older), others from their installed metadata."""
    if canonicalize_name(dist) == canonicalize_name(DIST):
        project = PYPROJECT["project"]
        ours = [Requirement(line) for line in project["dependencies"]]
        for extra in sorted(extras):
            for line in project["optional-dependencies"][extra]:
                req = Requirement(line)
                # `mlops-operator[a,b]` inside a group: that group includes groups a and b.
                same = canonicalize_name(req.name) == canonicalize_name(DIST)
                ours += requirements(DIST, set(req.extras)) if same else [req]
        return ours
    out = []
    for line in md.requires(dist) or []:
        req = Requirement(line)
        if req.marker is None or any(
            req.marker.evaluate({**default_environment(), "extra": e}) for e in extras | {""}
        ):
            out.append(req)
    return out


def declared(program: str) -> set[str]:
    return {canonicalize_name(r.name) for r in requirements(DIST, set(IMAGES[program]))}


def closure(program: str) -> set[str]:
    """Every distribution that installing the program's groups brings, from the installed metadata."""
    todo = requirements(DIST, set(IMAGES[program]))
    out: set[str] = set()
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name == canonicalize_name(DIST) or name in out:
            continue
        out.add(name)
        todo.extend(requirements(name, set(req.extras)))
    return out


DISTRIBUTIONS = md.packages_distributions()


@pytest.mark.parametrize("program", sorted(IMAGES))
def test_every_library_a_program_imports_is_in_its_groups(program: str) -> None:
    groups = declared(program)
    found = third_party_imports(program)
    assert found, "the walk found no third-party import at all: it is broken"
    missing = []
    for (module, top), only_in_functions in sorted(found.items()):
        dists = {canonicalize_name(d) for d in DISTRIBUTIONS.get(top, [])}
        assert dists, f"{module} imports {top}, which no installed distribution provides"
        outside = [OUTSIDE_THE_IMAGE[program].get((module, d)) for d in dists]
        if any(outside):
            assert only_in_functions, f"{module} imports {top} at module level: its image lacks it"
            continue
        if not dists & groups:
            missing.append(f"{module} imports {top} ({', '.join(sorted(dists))})")
    assert missing == [], f"{program}'s groups {IMAGES[program]} lack: " + "; ".join(missing)


def test_the_walk_sees_imports_inside_functions() -> None:
    """The walk is what the first test stands on: show it on imports known to be lazy."""
    assert third_party_imports("operator")[("mlops_operator.kube", "kubernetes")] is True
    trainer = third_party_imports("trainer")
    assert trainer[("mlops_contract.storage", "boto3")] is True  # s3:// only
    assert trainer[("mlops_trainer.data", "pandas")] is False
    assert ("mlops_contract.arrayplan", "numpy") in third_party_imports("server")


def test_what_the_images_leave_out_is_declared_for_development() -> None:
    dev = {canonicalize_name(r.name) for r in requirements(DIST, {"dev", "s3"})}
    for program, outside in OUTSIDE_THE_IMAGE.items():
        for module, dist in outside:
            assert dist in dev, f"{module} imports {dist}: `dev` or `s3` must provide it"
            assert dist not in declared(program), f"{dist} is in {program}'s groups: not outside its image"


@pytest.mark.parametrize("program", sorted(IMAGES))
def test_the_lean_images_stay_lean(program: str) -> None:
    carried = closure(program) & NEVER[program]
    assert carried == set(), f"installing {IMAGES[program]} brings {sorted(carried)}"


def test_dev_installs_every_programs_groups() -> None:
    """`pip install -e '.[dev,s3]'` (the Makefile) gives the tests every program's libraries."""
    dev = {canonicalize_name(r.name) for r in requirements(DIST, {"dev", "s3"})}
    for program in IMAGES:
        assert declared(program) <= dev, f"dev lacks {sorted(declared(program) - dev)} of {program}"


def test_each_image_names_groups_that_exist() -> None:
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    assert set(IMAGES) == {"operator", "trainer", "server"}
    assert NEVER["operator"] >= {"numpy", "scikit-learn", "scipy", "pandas", "pyarrow", "kubernetes"}
    for program, groups in IMAGES.items():
        assert set(groups) <= extras, f"{program}: no such group {sorted(set(groups) - extras)}"
