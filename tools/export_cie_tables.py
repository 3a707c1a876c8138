"""Development-time export of the CIE tables shipped in coating/optics/data/ (needs colour-science).

Run once by a developer: ``python tools/export_cie_tables.py``. The runtime never imports
colour-science; it reads the CSV files this writes. Re-running overwrites them.
"""
import colour

v = colour.__version__
cmfs = colour.MSDS_CMFS['CIE 1964 10 Degree Standard Observer']
with open('coating/optics/data/cie1964_10deg_cmfs.csv', 'w') as f:
    f.write(f"# CIE 1964 10-degree standard observer colour-matching functions, 1 nm, 360-830 nm.\n"
            f"# Source: colour-science {v}, colour.MSDS_CMFS['CIE 1964 10 Degree Standard Observer']\n"
            f"# (CIE 015:2018 tables). Exported unchanged at development time.\n")
    f.write("wavelength_nm,x_bar_10,y_bar_10,z_bar_10\n")
    for w, row in zip(cmfs.wavelengths, cmfs.values):
        f.write(f"{w:g},{row[0]!r},{row[1]!r},{row[2]!r}\n")
raw = colour.colorimetry.datasets.illuminants.sds.DATA_ILLUMINANTS_CIE['D65']
with open('coating/optics/data/cie_d65.csv', 'w') as f:
    f.write(f"# CIE standard illuminant D65 relative spectral power distribution, 5 nm, "
            f"{min(raw)}-{max(raw)} nm.\n"
            f"# Source: colour-science {v}, colour.colorimetry.datasets.illuminants.sds."
            f"DATA_ILLUMINANTS_CIE['D65']\n# (CIE S 014-2 / CIE 015:2018). Exported unchanged at development time.\n")
    f.write("wavelength_nm,relative_power\n")
    for w in sorted(raw):
        f.write(f"{w:g},{raw[w]!r}\n")
