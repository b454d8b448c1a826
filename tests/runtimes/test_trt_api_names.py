"""Every TensorRT name vggdeploy uses exists in TensorRT 10.16 and 11.4, and the double is faithful.

See tests/data/trt-api/README.md for where the name lists come from and why a name counts as
present when a line of the list ends with it.
"""

from __future__ import annotations

import ast
import enum
import inspect
from pathlib import Path

import pytest
from trt_double import build_module, fake_cuda

import vggdeploy.exporter.dla as dla_module
import vggdeploy.exporter.engine as engine_module
import vggdeploy.runtimes._cuda as cuda_module
import vggdeploy.runtimes._trt as trt_support_module
import vggdeploy.runtimes.trt as trt_module

DATA = Path(__file__).parents[1] / "data" / "trt-api"
LISTS = {"10.16": "tensorrt-10.16.1.11.names", "11.4": "tensorrt-11.4.0.106.names"}
MODULES = [trt_module, trt_support_module, engine_module, dla_module]
# Local names (and `self.` attributes) that hold TensorRT objects in vggdeploy's code.
TRT_OBJECTS = {
    "trt", "builder", "network", "config", "parser", "error", "profile", "runtime", "engine",
    "context", "inspector", "creation", "severity", "layer",
}  # fmt: skip
TRT_SELF_ATTRS = {"_trt", "_engine", "_context", "_runtime"}
VERSION_GUARDS = ("major_version", "__version__", "hasattr", "version_tuple")


def load_names(generation: str) -> list[str]:
    return (DATA / LISTS[generation]).read_text().split()


@pytest.fixture(scope="module")
def names() -> dict[str, tuple[set[str], list[str]]]:
    out = {}
    for gen in LISTS:
        lines = load_names(gen)
        out[gen] = (set(lines), lines)
    return out


def present(name: str, lists: tuple[set[str], list[str]]) -> bool:
    exact, lines = lists
    return name in exact or any(line.endswith(name) for line in lines)


# -- what the code uses ---------------------------------------------------------------------------


def _root(node: ast.AST) -> tuple[str | None, list[str]]:
    """The base name of an attribute chain and the attributes after it (calls/subscripts skipped)."""
    attrs = []
    while True:
        if isinstance(node, ast.Attribute):
            attrs.append(node.attr)
            node = node.value
        elif isinstance(node, (ast.Call,)):
            node = node.func
        elif isinstance(node, ast.Subscript):
            node = node.value
        else:
            break
    base = node.id if isinstance(node, ast.Name) else None
    return base, attrs[::-1]


def used_trt_names(tree: ast.AST) -> set[str]:
    """Attribute names accessed on `trt` or on a TensorRT object, plus ILogger overrides."""
    used: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            base, attrs = _root(node)
            if base == "self" and attrs and attrs[0] in TRT_SELF_ATTRS:
                attrs = attrs[1:]
            elif base not in TRT_OBJECTS:
                continue
            used.update(a for a in attrs if not (a.startswith("__") and a != "__version__"))
        if isinstance(node, ast.ClassDef) and any("ILogger" in ast.unparse(b) for b in node.bases):
            used.update(
                f.name for f in node.body if isinstance(f, ast.FunctionDef) and f.name == "log"
            )
    return used


def module_tree(module) -> ast.AST:
    return ast.parse(Path(module.__file__).read_text())


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_code_uses_only_listed_names(module) -> None:
    used = used_trt_names(module_tree(module))
    assert used, "the AST walk found no TensorRT attribute at all: the walker is broken"
    unlisted = sorted(used - set(module.TENSORRT_API))
    assert not unlisted, (
        f"{module.__name__} uses TensorRT names missing from TENSORRT_API: {unlisted}"
    )


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_listed_names_are_used(module) -> None:
    # Names used only as strings (getattr) count too; the list itself is cut out first.
    source = Path(module.__file__).read_text()
    tree = module_tree(module)
    (assign,) = [
        n
        for n in tree.body
        if isinstance(n, ast.Assign)
        and any(getattr(t, "id", "") == "TENSORRT_API" for t in n.targets)
    ]
    lines = source.splitlines()
    rest = "\n".join(lines[: assign.lineno - 1] + lines[assign.end_lineno :])
    used = used_trt_names(tree)
    stale = [n for n in module.TENSORRT_API if n not in used and f'"{n}"' not in rest]
    assert not stale, f"{module.__name__}.TENSORRT_API lists names the code no longer uses: {stale}"


@pytest.mark.parametrize("generation", list(LISTS))
@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_every_used_name_exists_in_the_release(module, generation, names) -> None:
    missing = [n for n in module.TENSORRT_API if not present(n, names[generation])]
    only10 = [n for n in missing if generation == "11.4" and present(n, names["10.16"])]
    unguarded = unguarded_uses(module_tree(module), set(only10))
    assert not unguarded, (
        f"{module.__name__} uses names that TensorRT {generation} lacks, outside a version "
        f"check: {unguarded}"
    )
    assert not [n for n in missing if n not in only10], (
        f"{module.__name__} uses names that TensorRT {generation} does not have: {missing}"
    )


def unguarded_uses(tree: ast.AST, risky: set[str]) -> list[str]:
    """Uses of `risky` attribute names that are not under an `if` testing the TensorRT version."""
    found: list[str] = []

    def visit(node: ast.AST, guarded: bool) -> None:
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            is_guard = any(g in test for g in VERSION_GUARDS)
            visit(node.test, guarded)
            for child in node.body:
                visit(child, guarded or is_guard)
            for child in node.orelse:
                visit(child, guarded or is_guard)
            return
        if isinstance(node, ast.Attribute) and node.attr in risky and not guarded:
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
        for child in ast.iter_child_nodes(node):
            visit(child, guarded)

    visit(tree, False)
    return found


def test_guard_checker_catches_an_unguarded_10x_only_name() -> None:
    unguarded = ast.parse("config.set_flag(trt.BuilderFlag.FP16)\n")
    guarded = ast.parse("if major_version(trt) < 11:\n    config.set_flag(trt.BuilderFlag.FP16)\n")
    assert unguarded_uses(unguarded, {"FP16"}) == ["line 1: trt.BuilderFlag.FP16"]
    assert unguarded_uses(guarded, {"FP16"}) == []


def test_walker_sees_chained_and_self_attributes() -> None:
    tree = ast.parse(
        "x = network.get_input(0).name\n"
        "y = self._engine.num_io_tensors\n"
        "z = trt.ILogger.Severity.WARNING\n"
        "w = self.bundle.root\n"
    )
    assert used_trt_names(tree) == {
        "get_input", "name", "num_io_tensors", "ILogger", "Severity", "WARNING",
    }  # fmt: skip


def test_tensorrt_11_removed_what_the_migration_guide_says(names) -> None:
    for removed in ("FP16", "int8_calibrator", "IInt8EntropyCalibrator2", "EXPLICIT_BATCH"):
        assert present(removed, names["10.16"])
        assert not present(removed, names["11.4"]), removed
    # Strong typing: the creation flag still exists in 11.x (accepted and ignored there).
    assert present("STRONGLY_TYPED", names["11.4"])


def test_no_weak_typing_names_anywhere_in_the_code() -> None:
    for module in MODULES:
        used = used_trt_names(module_tree(module)) | set(module.TENSORRT_API)
        assert not used & {"FP16", "int8_calibrator", "IInt8EntropyCalibrator2", "EXPLICIT_BATCH"}


# -- the double is faithful -----------------------------------------------------------------------


def double_public_names(module) -> set[str]:
    """Every public name the double exposes: module attributes, class members, enum members,
    and public instance attributes its classes set in methods."""
    found = {n for n in vars(module) if not n.startswith("_")} | {"__version__"}
    for value in vars(module).values():
        if not isinstance(value, type):
            continue
        if issubclass(value, enum.Enum):
            found |= set(value.__members__)
            continue
        for cls in value.__mro__:
            if cls.__module__ != "tensorrt":
                continue
            for name, member in vars(cls).items():
                if name.startswith("_"):
                    continue
                found.add(name)
                if isinstance(member, type) and issubclass(member, enum.Enum):
                    found |= set(member.__members__)
            for member in vars(cls).values():
                if callable(member) and not isinstance(member, type):
                    try:
                        src = inspect.getsource(member)
                    except (OSError, TypeError):
                        continue
                    for node in ast.walk(ast.parse(inspect.cleandoc("\n" + src))):
                        if (
                            isinstance(node, ast.Attribute)
                            and isinstance(node.ctx, ast.Store)
                            and isinstance(node.value, ast.Name)
                            and node.value.id == "self"
                            and not node.attr.startswith("_")
                        ):
                            found.add(node.attr)
    return found


@pytest.mark.parametrize("generation", list(LISTS))
def test_double_exposes_only_real_names(generation, names) -> None:
    module = build_module(generation)
    exposed = double_public_names(module)
    fake = sorted(n for n in exposed if not present(n, names[generation]))
    assert not fake, f"the TensorRT {generation} double exposes names the real one lacks: {fake}"


def test_double_generations_differ_as_the_real_ones_do(names) -> None:
    ten, eleven = build_module("10.16"), build_module("11.4")
    assert hasattr(ten.BuilderFlag, "FP16") and not hasattr(eleven.BuilderFlag, "FP16")
    assert hasattr(ten, "IInt8EntropyCalibrator2") and not hasattr(
        eleven, "IInt8EntropyCalibrator2"
    )
    assert hasattr(ten.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert not hasattr(eleven.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    assert hasattr(eleven.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    logger = ten.Logger()
    assert hasattr(ten.Builder(logger).create_builder_config(), "int8_calibrator")
    assert not hasattr(eleven.Builder(eleven.Logger()).create_builder_config(), "int8_calibrator")
    # and every name in which the generations differ is one the real lists disagree on too
    diff = double_public_names(ten) ^ double_public_names(eleven)
    for name in diff:
        assert present(name, names["10.16"]) != present(name, names["11.4"]), name


def test_fake_cuda_matches_the_real_glue() -> None:
    """The fake glue has exactly the real glue's functions and classes (plus the controls tests
    drive it with), with the same signatures, members, member kinds and method signatures."""

    def public(mod):
        return {
            n: v
            for n, v in vars(mod).items()
            if not n.startswith("_")
            and (inspect.isfunction(v) or inspect.isclass(v))
            and getattr(v, "__module__", "") == mod.__name__
        }

    real, fake = public(cuda_module), public(fake_cuda)
    controls = set(fake_cuda.TEST_CONTROLS)
    assert controls <= set(vars(fake_cuda)), controls - set(vars(fake_cuda))
    assert set(real) - {"DeviceInfo"} == set(fake) - controls, set(real) ^ (set(fake) - controls)
    assert fake_cuda.DeviceInfo is cuda_module.DeviceInfo
    for name, obj in real.items():
        if inspect.isfunction(obj):
            assert inspect.signature(obj) == inspect.signature(fake[name]), name
        elif name != "DeviceInfo":
            real_members = {m for m in vars(obj) if not m.startswith("_")}
            fake_members = {m for m in vars(fake[name]) if not m.startswith("_")}
            assert real_members == fake_members, name
            assert inspect.signature(obj.__init__) == inspect.signature(fake[name].__init__)
            for member in real_members:
                r, f = vars(obj)[member], vars(fake[name])[member]
                assert type(r) is type(f), f"{name}.{member}: {type(r)} vs {type(f)}"
                if inspect.isfunction(r):
                    assert inspect.signature(r) == inspect.signature(f), f"{name}.{member}"
