"""Field types of the AIRR Rearrangement schema and scirpy's spellings of missing values.

Light constants (and the 10x JSON region types) shared by the parse-time contig checks (:mod:`.sniff_vdj`) and the
contig readers (:mod:`cartcohort.io.contigs`, :mod:`cartcohort.io.airr`), which
must agree on which values a typed field accepts.
"""

from __future__ import annotations

#: Required fields of the AIRR Rearrangement schema (airr 2.0.0), in schema order.
AIRR_REQUIRED = (
    "sequence_id",
    "sequence",
    "rev_comp",
    "productive",
    "v_call",
    "d_call",
    "j_call",
    "sequence_alignment",
    "germline_alignment",
    "junction",
    "junction_aa",
    "v_cigar",
    "d_cigar",
    "j_cigar",
)
#: Fields of type ``boolean`` in the AIRR Rearrangement schema (airr 2.0.0).
AIRR_BOOLEAN = frozenset(
    {
        "complete_vdj",
        "j_frameshift",
        "productive",
        "rev_comp",
        "stop_codon",
        "v_frameshift",
        "vj_in_frame",
    }
)
#: Fields of type ``number`` in the AIRR Rearrangement schema (airr 2.0.0).
AIRR_NUMBER = frozenset(
    f"{seg}_{kind}"
    for seg in ("v", "d", "d2", "j", "c")
    for kind in ("score", "identity", "support")
)
#: Fields of type ``integer`` in the AIRR Rearrangement schema (airr 2.0.0).
AIRR_INTEGER = (
    frozenset(
        [
            f"{seg}_{kind}_{end}"
            for seg in ("v", "d", "d2", "j", "c")
            for kind in ("sequence", "germline", "alignment")
            for end in ("start", "end")
        ]
        + [
            f"{region}_{end}"
            for region in ("cdr1", "cdr2", "cdr3", "fwr1", "fwr2", "fwr3", "fwr4")
            for end in ("start", "end")
        ]
        + [
            "junction_length",
            "junction_aa_length",
            "np1_length",
            "np2_length",
            "np3_length",
            "n1_length",
            "n2_length",
            "n3_length",
            "p3v_length",
            "p5d_length",
            "p3d_length",
            "p5d2_length",
            "p3d2_length",
            "p5j_length",
            "v_frameshift",
            "j_frameshift",
            "d_frame",
            "d2_frame",
            "consensus_count",
            "duplicate_count",
            "umi_count",
        ]
    )
    - AIRR_BOOLEAN
)

#: Loci of VJ chains and of VDJ chains (scirpy's chain types).
VJ_LOCI = ("TRA", "TRG", "IGK", "IGL")
VDJ_LOCI = ("TRB", "TRD", "IGH")
#: Region types of a 10x contig JSON's annotations, and the gene call they give.
JSON_REGIONS = {
    "L-REGION+V-REGION": "v",
    "D-REGION": "d",
    "J-REGION": "j",
    "C-REGION": "c",
}
#: Spellings of "missing" in gene calls, CIGARs and ``locus`` of AIRR TSVs in the wild;
#: blanked before the locus is inferred (cart-cohort's own pre-processing).
AIRR_NA_LIKE = ("NA", "N/A", "None", "nan", "NaN", "null")
#: Strings scirpy treats as missing (``scirpy.util._is_na2``).
SCIRPY_NA_STRINGS = ("NaN", "nan", "None", "N/A", "")
#: Spellings of true and false that ``airr.schema.Schema.to_bool`` reads.
AIRR_TRUE_VALUES = ("True", "true", "TRUE", "T", "t", "1")
AIRR_FALSE_VALUES = ("False", "false", "FALSE", "F", "f", "0")


def schema_type(field: str) -> str | None:
    """The AIRR schema type of ``field``: ``boolean``, ``integer``, ``number`` or ``None``."""
    if field in AIRR_BOOLEAN:
        return "boolean"
    if field in AIRR_INTEGER:
        return "integer"
    if field in AIRR_NUMBER:
        return "number"
    return None
