"""The DVC pipeline: generated from params.yaml, claims.yaml and the notebooks; never stale."""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from dropoutlab import pipeline
from dropoutlab.notebooks import list_notebooks, load_params

ROOT = Path(__file__).resolve().parents[1]
DVC = yaml.safe_load((ROOT / "dvc.yaml").read_text())
PROFILES = load_params(ROOT)["pipeline"]["profiles"]
NOTEBOOKS = list_notebooks(ROOT)
BUILT = pipeline.build(ROOT)  # seconds: every notebook's parameters and imports are read


@pytest.fixture
def built_once(monkeypatch):
    """For tests of what uses the pipeline (not of how it is built): build() answers from the one build above,
    which test_dvc_yaml_is_generated_and_current checks against dvc.yaml."""
    monkeypatch.setattr(pipeline, "build", lambda root=None: json.loads(json.dumps(BUILT)))


def test_dvc_yaml_is_generated_and_current():
    assert (ROOT / "dvc.yaml").read_text() == pipeline.render(ROOT), "dvc.yaml is stale: run `make pipeline`"
    assert BUILT == DVC


NOTEBOOK_STAGES = [(name, profile) for profile in PROFILES for name in NOTEBOOKS if f"{name}-{profile}" in DVC["stages"]]


def test_stages_in_notebook_order_with_data_first_and_report_last(built_once):
    names = list(DVC["stages"])
    assert names[-1] == "report"
    data = [n for n in names if n.startswith("data-")]
    assert names[: len(data)] == data
    assert all(f"{nb}-quick" in names for nb in NOTEBOOKS), "the default profile has every notebook"
    for profile in PROFILES:
        staged = [n for n in names if n.endswith(f"-{profile}")]
        assert staged == [f"{nb}-{profile}" for nb in NOTEBOOKS if f"{nb}-{profile}" in names]
        assert staged == [n for n in pipeline.profile_stages(profile, ROOT) if n.endswith(f"-{profile}")]
    for name, stage in DVC["stages"].items():  # a training part comes before the stage that uses its runs
        for dep in stage.get("deps", []):
            if dep.startswith("runs/"):
                producer = next(n for n, s in DVC["stages"].items()
                                if any(next(iter(o)) == dep for o in s.get("outs", [])))
                assert names.index(producer) < names.index(name)


@pytest.mark.parametrize(("name", "profile"), NOTEBOOK_STAGES)
def test_notebook_stage_writes_to_its_profiles_places(name, profile):
    stage = DVC["stages"][f"{name}-{profile}"]
    assert stage["cmd"] == f"dropoutlab run-notebook {name} --profile {profile}"
    outs = {next(iter(o)): o[next(iter(o))] for o in stage["outs"]}
    committed = {f"reports/{profile}/notebooks/{name}.ipynb", f"reports/{profile}/notebooks/{name}.html",
                 f"figures/{profile}/{name}"}
    kept = {f"runs/{profile}/{name}/main"} if profile in ("full", "paper") else set()
    assert set(outs) == committed | kept
    assert all(outs[o] == {"cache": False} for o in committed), "outputs are committed, so a fresh clone shows them"
    assert all(outs[o] == {"persist": True, "cache": False} for o in kept), "runs survive a re-run: it resumes"
    assert [next(iter(m)) for m in stage["metrics"]] == [f"reports/{profile}/metrics/{name}.json"]
    assert f"notebooks.{name}.{profile}" in stage["params"] and "cpu_threads" in stage["params"]


def test_training_parts_share_the_notebooks_inputs_and_feed_its_stage():
    params = load_params(ROOT)
    for profile in PROFILES:
        for name in NOTEBOOKS:
            parts = pipeline.notebook_parts(name, profile, params)
            if f"{name}-{profile}" not in DVC["stages"]:
                continue
            main = DVC["stages"][f"{name}-{profile}"]
            for part, overrides in parts.items():
                stage = DVC["stages"][f"{name}-{profile}-{part}"]
                assert stage["cmd"].startswith(f"dropoutlab run-notebook {name} --profile {profile} --part {part} -p ")
                given = dict(arg.split("=", 1) for arg in stage["cmd"].split(" -p ")[1:])
                assert {k.strip("'"): yaml.safe_load(v.strip("'")) for k, v in given.items()} == overrides
                assert stage["outs"] == [{f"runs/{profile}/{name}/{part}": {"persist": True, "cache": False}}]
                assert stage["params"] == main["params"]
                assert set(stage["deps"]) < set(main["deps"]) and f"runs/{profile}/{name}/{part}" in main["deps"]
            for other in (params["pipeline"].get("reuse") or {}).get(name, []):
                if profile in ("full", "paper") and f"{other}-{profile}" in DVC["stages"]:
                    assert f"runs/{profile}/{other}/main" in main["deps"]


def test_notebook_parts_from_a_list_parameter_or_a_mapping():
    params = {"notebooks": {"nb": {"common": {"seeds": [0]}, "full": {"seeds": [3, 4]}}},
              "pipeline": {"parts": {"full": {"nb": "seeds"}, "paper": {"nb": {"a": {"seeds": [1]}}}}}}
    assert pipeline.notebook_parts("nb", "full", params) == {"seed-3": {"seeds": [3]}, "seed-4": {"seeds": [4]}}
    assert pipeline.notebook_parts("nb", "paper", params) == {"a": {"seeds": [1]}}
    assert pipeline.notebook_parts("other", "full", params) == {}
    by = {**params, "pipeline": {"parts": {"full": {"nb": {"by": "seeds", "set": {"n": 1}}}}}}
    assert pipeline.notebook_parts("nb", "full", by) == {"seed-3": {"seeds": [3], "n": 1}, "seed-4": {"seeds": [4], "n": 1}}
    with pytest.raises(ValueError, match="takes only those two keys"):
        pipeline.notebook_parts("nb", "full", {**params, "pipeline": {"parts": {"full": {"nb": {"by": "seeds", "x": 1}}}}})
    with pytest.raises(ValueError, match="pipeline.parts.full.nb: 'epochs' must name a non-empty list"):
        pipeline.notebook_parts("nb", "full", {**params, "pipeline": {"parts": {"full": {"nb": "epochs"}}}})
    with pytest.raises(ValueError, match="only full, paper keep runs"):
        pipeline.notebook_parts("nb", "quick", {**params, "pipeline": {"parts": {"quick": {"nb": "seeds"}}}})


def test_data_stages_keep_their_files_across_reruns():
    for name, stage in DVC["stages"].items():
        if name.startswith("data-"):
            assert stage["outs"] == [{f"data/raw/{name.removeprefix('data-')}": {"persist": True}}]


# Run in a fresh interpreter: the third-party libraries the notebooks use are imported once, then each
# notebook's import statements run in a forked child (no dropoutlab module loaded before the fork).
_PROBE = """
import json, os, sys
import matplotlib.pyplot, numpy, pandas, scipy.stats, seaborn, sklearn, torch
assert not any(name.split(".")[0] == "dropoutlab" for name in sys.modules)
found = {}
for notebook, code in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    if os.fork() == 0:
        os.close(read)
        try:
            exec(code, {})
            files = [m.__file__ for n, m in list(sys.modules.items())
                     if n.split(".")[0] == "dropoutlab" and getattr(m, "__file__", None)]
            os.write(write, json.dumps(sorted(files)).encode())
        finally:
            os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 1 << 16):
        chunks.append(chunk)
    os.close(read)
    os.wait()
    found[notebook] = json.loads(b"".join(chunks) or b"null")
print(json.dumps(found))
"""


@pytest.fixture(scope="module")
def imported_package_files() -> dict[str, set[str]]:
    """Independent of the generator: run each notebook's import statements and list what got loaded."""
    probes = {}
    for name in NOTEBOOKS:
        code = "\n".join(pipeline.notebook_code(name, ROOT))
        probes[name] = "\n".join(ast.unparse(node) for node in ast.parse(code).body
                                 if isinstance(node, (ast.Import, ast.ImportFrom)))
    out = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(probes)], cwd=ROOT, capture_output=True, text=True,
                         check=True)
    found = json.loads(out.stdout.splitlines()[-1])
    assert all(found[name] for name in NOTEBOOKS), f"an import failed: {found}"
    return {name: {Path(f).resolve().relative_to(ROOT).as_posix() for f in files} for name, files in found.items()}


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_stage_deps_cover_every_package_module_the_notebook_loads(name, imported_package_files):
    deps = set(DVC["stages"][f"{name}-quick"]["deps"])
    missing = imported_package_files[name] - deps
    assert not missing, f"{name}: its stage would not re-run when these change: {sorted(missing)}"


def test_module_dependencies_follow_relative_imports(tmp_path):
    pkg = tmp_path / "src" / "dropoutlab"
    (pkg / "analysis").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .b import f\n")
    (pkg / "b.py").write_text("from . import c\n")
    (pkg / "c.py").write_text("import os\n")
    (pkg / "unused.py").write_text("")
    (pkg / "analysis" / "__init__.py").write_text("from .d import g\n")
    (pkg / "analysis" / "d.py").write_text("from ..c import x\n")
    deps = pipeline.module_dependencies(["from dropoutlab.a import f", "import dropoutlab.analysis"], tmp_path)
    assert deps == ["src/dropoutlab/__init__.py", "src/dropoutlab/a.py", "src/dropoutlab/analysis/__init__.py",
                    "src/dropoutlab/analysis/d.py", "src/dropoutlab/b.py", "src/dropoutlab/c.py"]


def test_reproduce_skips_what_missing_data_needs(built_once, monkeypatch, capsys):
    calls = []

    def fake_dvc(*args, root):
        calls.append(args)
        return 1 if args == ("repro", "data-fashion-mnist") else 0

    monkeypatch.setattr(pipeline, "_dvc", fake_dvc)
    outcome = pipeline.reproduce("quick", root=ROOT)
    needs_fashion = [s for s, d in pipeline.stage_datasets(ROOT).items() if "fashion-mnist" in d and "quick" in s]
    assert outcome["missing"] == ["fashion-mnist"] and outcome["skipped"] == needs_fashion
    run = next(c for c in calls if c[:2] == ("repro", "--single-item") and c[-1] != "report")
    assert set(run[2:]) == set(outcome["ran"]) and not set(run) & set(needs_fashion)
    assert calls[-1] == ("repro", "--single-item", "report")
    assert "apt-get install -y dataset-fashion-mnist" in capsys.readouterr().out


def test_dvc_config_has_no_analytics():
    config = (ROOT / ".dvc" / "config").read_text()
    assert "analytics = false" in config and "check_update = false" in config


@pytest.mark.skipif(shutil.which("dvc") is None or not (ROOT / ".git").exists(), reason="needs dvc and a git checkout")
def test_dvc_lists_every_stage():
    result = subprocess.run(["dvc", "stage", "list"], cwd=ROOT, capture_output=True, text=True, check=True)
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.strip()}
    assert set(DVC["stages"]) <= listed


def test_environment_yml_installs_the_lock():
    """conda's environment.yml and the tested pip path install the same pins (Binder reads both files)."""
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    assert "-r requirements.lock" in pip and "torch==2.13.0" in pip and "-e ." in pip
    assert any(str(d).startswith("python=3.11") for d in env["dependencies"])
    lock = (ROOT / "requirements.lock").read_text().splitlines()
    makefile = (ROOT / "Makefile").read_text()
    assert "torch==2.13.0" in lock and "install -q torch==2.13.0" in makefile


def test_apt_txt_lists_what_the_data_routes_need():
    assert "dataset-fashion-mnist" in (ROOT / "apt.txt").read_text().split()
    assert "apt.txt" in (ROOT / "Makefile").read_text()
