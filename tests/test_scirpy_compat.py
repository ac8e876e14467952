"""The numba-free index_chains kernels give exactly scirpy's results."""

import importlib.resources

import numpy as np
import pytest

from cartcohort import _scirpy


def _chain_qc(adata, ir):
    ir.pp.index_chains(adata)
    ir.tl.chain_qc(adata)
    return adata.obsm["chain_indices"], adata.obs[["receptor_type", "receptor_subtype", "chain_pairing"]]


def test_patched_index_chains_equals_numba_version():
    import awkward as ak
    import scirpy as ir
    from scirpy.pp import _index_chains

    data = importlib.resources.files("scirpy") / "tests" / "data" / "10x"
    original = (_index_chains._awkward_isin, _index_chains._awkward_len)
    if getattr(original[0], "__module__", "") == _scirpy.__name__:
        pytest.skip("scirpy already patched in this process; compared in a fresh one below")
    ref = ir.io.read_10x_vdj(data / "vdj_nextgem_hs_pbmc3_t_filtered_contig_annotations.csv.gz")
    ref_idx, ref_obs = _chain_qc(ref, ir)
    patched = _scirpy.load_scirpy()
    try:
        new = patched.io.read_10x_vdj(data / "vdj_nextgem_hs_pbmc3_t_filtered_contig_annotations.csv.gz")
        new_idx, new_obs = _chain_qc(new, patched)
    finally:
        _index_chains._awkward_isin, _index_chains._awkward_len = original
        _scirpy.load_scirpy.cache_clear()
    assert (ref_obs == new_obs).all().all()
    for key in ("VJ", "VDJ", "multichain"):
        assert ak.to_list(ref_idx[key]) == ak.to_list(new_idx[key])
    assert ref_obs["chain_pairing"].nunique() > 3  # a varied real data set


def test_isin_and_len_kernels_on_jagged_arrays():
    import awkward as ak

    arr = ak.Array([["TRA", "TRB", "IGH"], [], ["TRB"]])
    assert ak.to_list(_scirpy._awkward_isin(arr, ["TRA", "TRB"])) == [[True, True, False], [], [True]]
    assert ak.to_list(_scirpy._awkward_len(arr)) == [3, 0, 1]
    assert ak.to_list(_scirpy._awkward_isin(arr, [])) == [[False, False, False], [], [False]]
