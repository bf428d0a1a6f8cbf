"""The house rules, checked on the code itself (see ARCHITECTURE.md): imports point down the layers and form no
cycle, every registered variant belongs to a family, no CLI option is declared twice, functions stay short,
argparse lives in the CLI, no development path is a default, and docstrings and comments describe the software."""
import ast
import collections
import io
import re
import tokenize
from pathlib import Path

import attnseg
from attnseg.families import FAMILIES, family

SRC = Path(attnseg.__file__).parent

# lowest first: a module may import modules of its own layer or a lower one
LAYERS = [
    ("base", ("attnseg.worksize", "attnseg.meta", "attnseg.io", "attnseg.pretrained", "attnseg.param_table",
              "attnseg.notes", "attnseg.yamltext", "attnseg.memory")),
    ("models", ("attnseg.models", "attnseg.families")),
    ("library", ("attnseg.data", "attnseg.engine", "attnseg.inference", "attnseg.checkpoint", "attnseg.deploy",
                 "attnseg.isr", "attnseg.plots", "attnseg")),
    ("analysis", ("attnseg.analysis",)),
    ("serve", ("attnseg.serve",)),
    ("ray", ("attnseg.ray_engine",)),
    ("cli", ("attnseg.cli", "attnseg.__main__")),
]


def layer(module: str) -> int:
    best = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if module == p or module.startswith(p + "."):
                if best is None or len(p) > best[1]:
                    best = (rank, len(p))
    assert best is not None, f"{module} is in no layer: add it to LAYERS and ARCHITECTURE.md"
    return best[0]


def modules() -> dict[str, Path]:
    out = {}
    for p in SRC.rglob("*.py"):
        parts = list(p.relative_to(SRC.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """Every attnseg import of every module (inside functions too), resolved to the module it names."""
    mods = modules()
    graph = {}
    for m, p in mods.items():
        pkg = m.split(".") if p.name == "__init__.py" else m.split(".")[:-1]
        targets = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom):
                base = (pkg[: len(pkg) - n.level + 1] + ([n.module] if n.module else [])) if n.level else [n.module or ""]
                tgt = ".".join(base)
                for a in n.names:
                    sub = f"{tgt}.{a.name}"
                    targets.add(sub if sub in mods else tgt)
            elif isinstance(n, ast.Import):
                targets.update(a.name for a in n.names)
        graph[m] = {t for t in targets if t in mods and t != m}
    return graph


def test_imports_point_down_the_layers():
    wrong = [(m, t) for m, ts in import_graph().items() for t in ts if layer(t) > layer(m)]
    assert wrong == [], "imports pointing up: " + ", ".join(f"{m} -> {t}" for m, t in sorted(wrong))


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    state: dict[str, int] = {}

    def visit(v, path):
        state[v] = 1
        for w in graph[v]:
            if state.get(w) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(w):] + [w]))
            if w not in state:
                visit(w, path + [w])
        state[v] = 2

    for v in graph:
        if v not in state:
            visit(v, [v])


def test_every_registered_variant_belongs_to_a_family():
    for name in attnseg.list_models():
        assert family(name).name in FAMILIES
    kinds = {family(n).kind for n in attnseg.list_models()}
    assert kinds == {"encoder", "segmenter", "language"}


def test_no_cli_option_is_declared_twice():
    seen = collections.defaultdict(list)
    for p in (SRC / "cli").glob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if (isinstance(n, ast.Call) and getattr(n.func, "attr", "") == "add_argument" and n.args
                    and isinstance(n.args[0], ast.Constant) and str(n.args[0].value).startswith("--")):
                seen[n.args[0].value].append(f"{p.name}:{n.lineno}")
    twice = {k: v for k, v in seen.items() if len(v) > 1}
    assert twice == {}, f"declare these once in cli/options.py: {twice}"


def test_functions_stay_short():
    long = []
    for p in SRC.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80:
                long.append(f"{p.relative_to(SRC).as_posix()}:{n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert long == [], "split these into named steps: " + ", ".join(long)


def test_command_lines_live_in_the_cli():
    """argparse is imported only by the CLI: the library takes typed values, never a parser or its namespace."""
    offenders = []
    for p in SRC.rglob("*.py"):
        if p.relative_to(SRC).parts[0] == "cli":
            continue
        for n in ast.walk(ast.parse(p.read_text())):
            names = ([a.name for a in n.names] if isinstance(n, ast.Import) else
                     [n.module or ""] if isinstance(n, ast.ImportFrom) else [])
            if any(m == "argparse" or m.startswith("argparse.") for m in names):
                offenders.append(p.relative_to(SRC).as_posix())
    assert offenders == [], f"argparse outside cli/: {offenders}"


def test_the_parsed_options_are_read_never_written():
    """The CLI turns its namespace into values it passes on (a default model, a backend's choice); it never writes
    them back onto `args` for a later reader to find."""
    written = []
    for p in SRC.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            targets = (n.targets if isinstance(n, ast.Assign) else [n.target] if isinstance(n, (ast.AugAssign,
                                                                                                  ast.AnnAssign))
                       else [])
            hits = [t for t in targets if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name)
                    and t.value.id == "args"]
            if (isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setattr" and n.args
                    and isinstance(n.args[0], ast.Name) and n.args[0].id == "args"):
                hits.append(n)
            written += [f"{p.relative_to(SRC).as_posix()}:{h.lineno}" for h in hits]
    assert written == [], f"options written onto the namespace: {written}"


def test_no_development_path_is_a_default():
    offenders = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
                 if "../shared" in p.read_text() or "shared/data" in p.read_text()]
    assert offenders == [], f"a development machine's path in {offenders}: take it as an argument or ATTNSEG_DATA"


NARRATION = re.compile(r"\bseed \d{3}\b|write-up|\b(this|a later|an earlier|the next|the previous) session\b|"
                       r"\bsessions\b|earlier code|earlier name|\byet\b|on this hardware|today's", re.I)


def _docstrings_and_comments(path: Path):
    text = path.read_text()
    tree = ast.parse(text)
    for n in ast.walk(tree):
        if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(n, clean=False)
            if doc:
                yield n.lineno if not isinstance(n, ast.Module) else 1, doc
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string


def test_the_code_speaks_of_the_software_not_of_how_it_was_built():
    found = [f"{p.relative_to(SRC).as_posix()}:{line}: {m.group(0)!r}" for p in SRC.rglob("*.py")
             for line, text in _docstrings_and_comments(p) for m in [NARRATION.search(text)] if m]
    assert found == [], "say what the code does, not its history: " + "; ".join(found)


def test_no_message_advises_unpickling_a_users_file():
    """Nothing in the package tells a user to load a file with weights_only=False (or to unpickle it)."""
    offenders = [str(p.relative_to(SRC)) for p in SRC.rglob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == [], offenders
