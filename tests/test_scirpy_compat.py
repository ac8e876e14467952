"""The numba-free index_chains kernels give exactly scirpy's results."""

import subprocess
import sys

from conftest import REPO

# Run in a fresh interpreter: in the test session scirpy is usually patched already.
_COMPARE = r"""
import importlib.resources, sys
import awkward as ak
import scirpy as ir
from cartcohort._utils import scirpy as _scirpy

data = importlib.resources.files("scirpy") / "tests" / "data" / "10x"
path = data / "vdj_nextgem_hs_pbmc3_t_filtered_contig_annotations.csv.gz"

def chain_qc(mod):
    a = mod.io.read_10x_vdj(path)
    mod.pp.index_chains(a)
    mod.tl.chain_qc(a)
    return a.obsm["chain_indices"], a.obs[["receptor_type", "receptor_subtype", "chain_pairing"]]

ref_idx, ref_obs = chain_qc(ir)          # scirpy's numba kernels
new_idx, new_obs = chain_qc(_scirpy.load_scirpy())
assert (ref_obs == new_obs).all().all(), "chain_qc differs"
for key in ("VJ", "VDJ", "multichain"):
    assert ak.to_list(ref_idx[key]) == ak.to_list(new_idx[key]), key
assert ref_obs["chain_pairing"].nunique() > 3
print("identical", len(ref_obs))
"""


def test_patched_index_chains_equals_numba_version():
    proc = subprocess.run([sys.executable, "-c", _COMPARE], capture_output=True, text=True,
                          env={"PYTHONPATH": str(REPO / "workflow" / "scripts"),
                               "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.startswith("identical")


def test_isin_and_len_kernels_on_jagged_arrays():
    import awkward as ak

    from cartcohort._utils import scirpy as _scirpy

    arr = ak.Array([["TRA", "TRB", "IGH"], [], ["TRB"]])
    assert ak.to_list(_scirpy._awkward_isin(arr, ["TRA", "TRB"])) == [[True, True, False], [], [True]]
    assert ak.to_list(_scirpy._awkward_len(arr)) == [3, 0, 1]
    assert ak.to_list(_scirpy._awkward_isin(arr, [])) == [[False, False, False], [], [False]]
