"""A mutation pass over the method modules: does a fast test fail when the code is wrong?

    python studies/mutation_pass.py [--per-module 12] [--seed 0] [--modules cxr/ssl/simclr.py ...]

Copies the checkout to a temporary folder, then for each method module (those
tests/test_architecture.py holds to the import rule) applies one small
mutation at a time (a comparison flipped or loosened, + and -, * and / swapped,
a unary minus dropped, `and` and `or` swapped, a 0 or 1 constant changed) at a
seeded sample of the places where one applies, and runs the module's fast
tests (its package's test folder and every test file that imports it). A
mutant the tests do not fail survives; each survivor is printed with its
line, for a person to judge: a test to write, or a change no result can see.
"""

import argparse
import ast
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SWAPS = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq, ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    ast.And: ast.Or, ast.Or: ast.And,
}  # fmt: skip


def method_modules():
    packages = ("ssl", "nn", "detection", "evaluation")
    paths = [p for package in packages for p in sorted((REPO / "cxr" / package).glob("*.py"))]
    paths += [REPO / "cxr" / "data" / "wbf.py", REPO / "cxr" / "data" / "splits.py"]
    return [p for p in paths if p.name != "__init__.py"]


def tests_of(module):
    """The fast tests of a module: its package's test folder (data: its own test file), and
    every other test file that imports it (a submission format tested through evaluate.py)."""
    package = module.parent.name
    own = [f"tests/data/test_{module.stem}.py"] if package == "data" else [f"tests/{package}"]
    name = ".".join(module.relative_to(REPO).with_suffix("").parts)
    importers = [
        str(path.relative_to(REPO))
        for path in sorted((REPO / "tests").rglob("test_*.py"))
        if f"from {name} import" in path.read_text()
        and not str(path.relative_to(REPO)).startswith(tuple(own))
    ]
    return own + importers


def mutation_sites(tree):
    """(node, what) of every place a mutation applies, in source order."""
    sites = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in SWAPS:
            sites.append((node, "compare"))
        elif isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in SWAPS:
            sites.append((node, "operator"))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            sites.append((node, "minus"))
        elif isinstance(node, ast.Constant) and node.value in (0, 1) and type(node.value) is int:
            sites.append((node, "constant"))
    return sorted(sites, key=lambda site: (site[0].lineno, site[0].col_offset))


class Mutate(ast.NodeTransformer):
    """Apply the mutation of site number `target` (in `mutation_sites` order)."""

    def __init__(self, target):
        self.target, self.description = target, None

    def visit(self, node):
        node = self.generic_visit(node)
        if node is self.target:
            old = ast.unparse(node)
            if isinstance(node, ast.Compare):
                node.ops[0] = SWAPS[type(node.ops[0])]()
            elif isinstance(node, (ast.BinOp, ast.BoolOp)):
                node.op = SWAPS[type(node.op)]()
            elif isinstance(node, ast.UnaryOp):
                node = node.operand
            else:
                node.value = 1 - node.value
            self.description = f"{old}  ->  {ast.unparse(node)}"
        return node


def run_tests(checkout, tests):
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-x",
        "-q",
        "-m",
        "not slow",
        "-p",
        "no:cacheprovider",
    ]
    try:
        result = subprocess.run(
            [*command, *tests], cwd=checkout, capture_output=True, text=True, timeout=300
        )
    except subprocess.TimeoutExpired:
        return "killed (timeout)"
    return "survived" if result.returncode == 0 else "killed"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-module", type=int, default=12, help="mutants per module at most")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modules", nargs="*", default=None, help="default: every method module")
    args = parser.parse_args()
    modules = [REPO / m for m in args.modules] if args.modules else method_modules()
    checkout = Path(tempfile.mkdtemp(prefix="cxr-mutants-"))
    shutil.copytree(
        REPO, checkout, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".venv", ".git")
    )
    totals = {"killed": 0, "survived": 0}
    try:
        for module in modules:
            relative = module.relative_to(REPO)
            source = module.read_text()
            sites = mutation_sites(ast.parse(source))
            chosen = sorted(
                random.Random(f"{args.seed}{relative}").sample(
                    range(len(sites)), min(args.per_module, len(sites))
                )
            )
            for number in chosen:
                tree = ast.parse(source)
                mutation = Mutate(mutation_sites(tree)[number][0])
                mutant = ast.unparse(ast.fix_missing_locations(mutation.visit(tree)))
                (checkout / relative).write_text(mutant)
                outcome = run_tests(checkout, tests_of(module))
                (checkout / relative).write_text(source)
                totals["survived" if outcome == "survived" else "killed"] += 1
                line = mutation_sites(ast.parse(source))[number][0].lineno
                print(f"{outcome:>16}  {relative}:{line}  {mutation.description}", flush=True)
    finally:
        shutil.rmtree(checkout, ignore_errors=True)
    print(f"{totals['killed']} killed, {totals['survived']} survived")


if __name__ == "__main__":
    main()
