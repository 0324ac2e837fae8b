"""The package layout shows the design: stages import one way, loading data walks from the source to batches, and
no module imports one that imports it back."""

import ast
from pathlib import Path

import jaxbert

SRC = Path(jaxbert.__file__).parent

# The stages, lowest first: a module may import its own stage's modules and those of lower stages only.
STAGES = ["errors", "storage", "rundir", "config", "data", "model", "training", "encode", "finetuning", "interop", "cli",
          "__init__"]
# Inside data/, the order a corpus travels in: a module imports only modules above it.
DATA_ORDER = ["cores", "hashing", "word_table", "imdb", "corpus", "wikitext", "tokenization", "sentence_ids",
              "prepare", "instances", "masking", "batches"]


def modules() -> dict[str, Path]:
    return {".".join(p.relative_to(SRC).with_suffix("").parts): p for p in SRC.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The jaxbert modules `name` imports anywhere in its file (inside functions too), as names like `data.masking`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jaxbert":
            base = node.module.removeprefix("jaxbert").lstrip(".")
            for alias in node.names:
                sub = f"{base}.{alias.name}".lstrip(".")
                found.add(sub if sub in known else base or "__init__")
        elif isinstance(node, ast.Import):
            found |= {a.name.removeprefix("jaxbert.") for a in node.names if a.name.startswith("jaxbert.")}
    return {f for f in found if f in known and f != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imports(name, path, set(mods)) for name, path in mods.items()}


def stage(name: str) -> int:
    return STAGES.index(name.split(".")[0])


def test_every_module_has_a_stage_and_data_modules_an_order():
    names = set(graph())
    assert {n.split(".")[0] for n in names} == set(STAGES)
    assert {n.split(".")[1] for n in names if n.startswith("data.")} == set(DATA_ORDER) | {"__init__"}


def test_stages_import_only_themselves_and_lower_stages():
    upward = [(a, b) for a, deps in graph().items() for b in deps if stage(b) > stage(a)]
    assert not upward, upward


def test_loading_data_walks_one_way_from_the_source_to_batches():
    rank = {f"data.{m}": i for i, m in enumerate(DATA_ORDER)}
    back = [(a, b) for a, deps in graph().items() if a in rank for b in deps if b in rank and rank[b] >= rank[a]]
    assert not back, back


def test_no_import_cycle():
    g = graph()
    cycles = []

    def visit(node, path):
        for dep in g[node]:
            if dep in path:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in done:
                visit(dep, path + [dep])
        done.add(node)

    done: set[str] = set()
    for name in g:
        if name not in done:
            visit(name, [name])
    assert not cycles, cycles[:3]


def test_the_graph_holds_the_known_edges():
    """The graph the tests above read is real: the known edges are in it (so an empty result means something)."""
    g = graph()
    assert "data.masking" in g["data.batches"] and "data.hashing" in g["data.prepare"]
    assert "finetuning.qa" in g["finetuning.runs"] and "finetuning.runs" not in g["finetuning.qa"]
    assert "training.train" in g["cli"]  # imported inside a function: counted too
