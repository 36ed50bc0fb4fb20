"""The architecture holds: the top of cxr/ holds only the commands, every method module
can be audited alone (it imports no machinery), and nothing imports the scripts."""

import ast
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "cxr"
COMMANDS = ["__init__.py", "experiment.py", "prepare.py", "report.py", "synthetic.py"]
METHOD_PACKAGES = ("ssl", "nn", "detection", "evaluation")
METHOD_DATA_MODULES = ("wbf", "splits")
RUNTIME_PACKAGES = {"torch", "torchvision", "numpy", "PIL", "pycocotools"}  # requirements.txt
SCRIPTS = {"train_ssl", "train_det", "evaluate"}


def module_name(path):
    return ".".join(path.relative_to(REPO).with_suffix("").parts)


def method_modules():
    paths = [p for package in METHOD_PACKAGES for p in (PACKAGE / package).glob("*.py")]
    paths += [PACKAGE / "data" / f"{name}.py" for name in METHOD_DATA_MODULES]
    return {module_name(p).removesuffix(".__init__"): p for p in paths}


def imports(path):
    """The absolute names of every module `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = module_name(path).rsplit(".", 1)[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names += [base] + [f"{base}.{alias.name}" for alias in node.names]
    return names


def outside_the_method(name, methods):
    """Why importing `name` breaks the rule, or None."""
    top = name.split(".")[0]
    if top in sys.stdlib_module_names or top in RUNTIME_PACKAGES:
        return None
    if top == "cxr":
        prefix = ".".join(name.split(".")[:3])
        if (
            name in methods
            or prefix in methods
            or name in ("cxr", *(f"cxr.{p}" for p in METHOD_PACKAGES))
        ):
            return None
        if name.rsplit(".", 1)[0] in methods:  # from cxr.ssl.views import ViewConfig
            return None
        return "a cxr module outside the method packages"
    return "a package outside the runtime packages"


def test_the_top_of_cxr_holds_only_the_commands_and_packages():
    assert sorted(p.name for p in PACKAGE.glob("*.py")) == COMMANDS
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file())
    assert packages == sorted([*METHOD_PACKAGES, "data", "pipeline", "run"])


def test_method_modules_import_only_the_standard_library_the_runtime_packages_and_each_other():
    methods = method_modules()
    assert len(methods) > 15
    broken = [
        f"{module} imports {name} ({why})"
        for module, path in sorted(methods.items())
        for name in imports(path)
        if (why := outside_the_method(name, methods))
    ]
    assert broken == []


def test_the_rule_sees_a_forbidden_import(tmp_path):
    methods = method_modules()
    assert outside_the_method("cxr.run.errors", methods)
    assert outside_the_method("cxr.data.images", methods)
    assert outside_the_method("scipy.stats", methods)
    assert outside_the_method("cxr.data.wbf", methods) is None
    assert outside_the_method("torch.nn.functional", methods) is None


def test_nothing_in_cxr_imports_or_loads_the_scripts():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        loaded = [name for name in imports(path) if name.split(".")[0] in SCRIPTS]
        assert loaded == [] and "spec_from_file_location" not in text, path


def shadowed_names(path):
    """(line, name) of every parameter or local of a function that shadows a function,
    class or import of its module."""
    tree = ast.parse(path.read_text())
    module_names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            module_names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            module_names.update((a.asname or a.name).split(".")[0] for a in node.names)
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef):
            continue
        arguments = function.args.posonlyargs + function.args.args + function.args.kwonlyargs
        found += [(function.lineno, a.arg) for a in arguments if a.arg in module_names]
        for node in ast.walk(function):
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                if node.id in module_names:
                    found.append((node.lineno, node.id))
    return found


def test_no_function_or_import_is_shadowed_by_a_parameter_or_local():
    paths = [*REPO.glob("*.py"), *PACKAGE.rglob("*.py")]
    shadowed = [
        f"{p.relative_to(REPO)}:{line} {name}" for p in paths for line, name in shadowed_names(p)
    ]
    assert shadowed == []
