"""tools/time_analyze.py: bad lists of variants are refused before any frame is written."""
import pytest

from tools import time_analyze


@pytest.mark.parametrize("extra, match", [(["--batches", "100,x"], "--batches: got '100,x'"),
                                          (["--estimators", "gls,ols"], "--estimators: got 'gls,ols'")])
def test_bad_variants_are_refused_before_any_work(tmp_path, extra, match):
    with pytest.raises(ValueError, match=match):
        time_analyze.main(["--model", "none", "--work", str(tmp_path / "w"), *extra])
    assert not (tmp_path / "w").exists()
