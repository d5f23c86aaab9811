"""The package's layers point one way, its files stay small, and function-level imports say why.

Layers, bottom to top (docs/architecture.md): compat; utils; the components archs, data, losses,
metrics; regularizers; config; models; evaluation; the entry points train and test. A module may
import its own package and lower layers, never a sibling component of its own layer or anything above.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'basicsr_ext'
LAYERS = {
    'compat': 0,
    'utils': 1,
    'archs': 2, 'data': 2, 'losses': 2, 'metrics': 2,
    'regularizers': 3,
    'config': 4,
    'models': 5,
    'evaluation': 6,
    'failures': 6,
    'train': 7, 'test': 7, '__init__': 7,
}
MAX_FILE_LINES = 400
MAX_MODEL_CLASS_LINES = 300


def package_of(path):
    """The top-level unit of basicsr_ext a file belongs to ('utils', 'archs', 'train', ...)."""
    rel = path.relative_to(PACKAGE)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def modules():
    return sorted(PACKAGE.rglob('*.py'))


def imported_units(path, tree):
    """(line, unit) for every import of basicsr_ext code in the file."""
    rel_parts = path.relative_to(PACKAGE).with_suffix('').parts
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel_parts[:-1])  # the file's package
                base = base[:len(base) - (node.level - 1)] if node.level > 1 else base
                target = base + (node.module.split('.') if node.module else [])
                if not target:  # `from . import x` at the package root imports the unit x
                    target = [node.names[0].name]
            elif node.module and node.module.split('.')[0] == 'basicsr_ext':
                target = node.module.split('.')[1:] or [node.names[0].name]
            else:
                continue
            out.append((node.lineno, target[0]))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split('.')
                if parts[0] == 'basicsr_ext' and len(parts) > 1:
                    out.append((node.lineno, parts[1]))
    return out


def test_every_unit_has_a_layer():
    units = {package_of(p) for p in modules()}
    assert not units - set(LAYERS), f'give these a layer in LAYERS and docs/architecture.md: {units - set(LAYERS)}'


def test_imports_point_down_only():
    violations = []
    for path in modules():
        own = package_of(path)
        tree = ast.parse(path.read_text(), str(path))
        for line, unit in imported_units(path, tree):
            if unit == own:
                continue
            if unit not in LAYERS:
                violations.append(f'{path.relative_to(PACKAGE.parent)}:{line} imports unknown unit {unit}')
            elif LAYERS[unit] >= LAYERS[own]:
                kind = 'a sibling of its layer' if LAYERS[unit] == LAYERS[own] else 'a higher layer'
                violations.append(f'{path.relative_to(PACKAGE.parent)}:{line}: {own} imports {unit}, {kind}')
    assert not violations, '\n'.join(violations)


def function_imports(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for sub in ast.walk(node):
                if isinstance(sub, (ast.Import, ast.ImportFrom)):
                    yield sub


def test_imports_inside_functions_say_why():
    missing = []
    for path in modules():
        lines = path.read_text().splitlines()
        for node in function_imports(ast.parse('\n'.join(lines), str(path))):
            here = lines[node.lineno - 1]
            first = node.lineno - 1  # a comment above a run of imports covers the whole run
            while first > 0 and lines[first - 1].strip().startswith(('import ', 'from ')):
                first -= 1
            above = lines[first - 1].strip() if first > 0 else ''
            if '#' not in here and not above.startswith('#'):
                missing.append(f'{path.relative_to(PACKAGE.parent)}:{node.lineno}: {here.strip()}')
    assert not missing, 'imports inside functions need a comment saying why:\n' + '\n'.join(missing)


def test_no_import_cycles():
    graph = {}
    for path in modules():
        own = package_of(path)
        graph.setdefault(own, set()).update(u for _, u in imported_units(path, ast.parse(path.read_text())) if u != own)
    visiting, done = set(), set()

    def visit(unit, trail):
        if unit in visiting:
            pytest.fail('import cycle: ' + ' -> '.join(trail + [unit]))
        if unit in done:
            return
        visiting.add(unit)
        for nxt in sorted(graph.get(unit, ())):
            visit(nxt, trail + [unit])
        visiting.discard(unit)
        done.add(unit)

    for unit in sorted(graph):
        visit(unit, [])


def test_files_stay_small():
    big = [f'{p.relative_to(PACKAGE.parent)}: {n} lines' for p in modules()
           if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert not big, f'files over {MAX_FILE_LINES} lines: {big}'


def test_model_classes_stay_small():
    big = []
    for path in (PACKAGE / 'models').rglob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_MODEL_CLASS_LINES:
                big.append(f'{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)')
    assert not big, f'model classes over {MAX_MODEL_CLASS_LINES} lines: {big}'


def test_the_checker_sees_a_violation(tmp_path):
    """The import parser resolves relative imports the way Python does (guards the checks above)."""
    fake = PACKAGE / 'utils' / 'fake.py'
    tree = ast.parse('from ..models import x\nfrom .misc import y\nfrom basicsr_ext.config import z\n'
                     'import basicsr_ext.archs.spec\n')
    assert imported_units(fake, tree) == [(1, 'models'), (2, 'utils'), (3, 'config'), (4, 'archs')]
