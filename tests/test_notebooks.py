"""Both notebooks run top to bottom, unattended, with small parameters.

papermill injects the parameters after the cell tagged ``parameters`` and
fails the test if any cell raises, which includes each notebook's
verification cell. Timing is scaled down (fetch every 0.5 s, TTL 2 s),
windows are a few seconds and there is one trial per fault kind; the
figures go to a temporary directory.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import nbformat
import papermill
import pytest
from jupyter_client.kernelspec import KernelSpecManager

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
FAST = {"FETCH_INTERVAL_S": 0.5, "LOCK_TTL_S": 2.0, "RENEW_INTERVAL_S": 0.5, "LEASE_MARGIN_S": 0.3}
PNG = b"\x89PNG\r\n\x1a\n"

CASES = {
    "01_api_call_savings.ipynb": (
        {**FAST, "INSTANCE_COUNTS": [2, 3], "PER_WORKER_CASE": 3, "WINDOW_S": 3.0,
         "TOLERANCE": 0.1, "BUDGET_INSTANCES": 3, "BUDGET_WINDOW_S": 3.0},
        ["01_api_call_savings.png", "01_calls_per_provider.png"],
    ),
    "02_failover.ipynb": (
        {**FAST, "INSTANCES": 2, "WORKERS": 2, "CLIENTS_PER_INSTANCE": 2, "TRIALS": 1,
         "ORIGINAL_RUNS": 50, "SETTLE_INTERVALS": 3},
        ["02_failover.png", "02_timeline.png"],
    ),
}


def parameter_names(nb: nbformat.NotebookNode) -> set[str]:
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, "exactly one cell must be tagged 'parameters'"
    tree = ast.parse(cells[0].source)
    return {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
            if isinstance(t, ast.Name)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_is_stored_clean_with_one_parameters_cell(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs are stored"
    params, _ = CASES[name]
    assert set(params) <= parameter_names(nb), "the test sets a parameter the notebook does not have"
    assert nb.metadata.kernelspec.name == "python3"


def test_python3_kernel_is_this_interpreter() -> None:
    # A python3 kernelspec from elsewhere (e.g. ~/.local/share/jupyter) would
    # run the notebooks in another Python, without this venv's packages.
    spec = KernelSpecManager().get_kernel_spec("python3")
    assert spec.argv[0] in ("python", "python3", sys.executable), (spec.resource_dir, spec.argv)


@pytest.mark.parametrize("name", sorted(CASES))
def test_notebook_runs_and_verifies(name: str, tmp_path: Path) -> None:
    params, figures = CASES[name]
    papermill.execute_notebook(
        str(NOTEBOOKS / name), str(tmp_path / name),
        parameters={**params, "FIGURE_DIR": str(tmp_path)},
        kernel_name="python3", cwd=str(NOTEBOOKS), progress_bar=False,
    )
    for figure in figures:
        data = (tmp_path / figure).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000, f"{figure} was not written"
    # Nothing was written beside the stored notebook.
    assert not [p.name for p in NOTEBOOKS.glob("*.png") if p.stat().st_mtime > tmp_path.stat().st_mtime]
