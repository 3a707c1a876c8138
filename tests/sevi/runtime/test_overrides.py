"""The shared typed override parser: splitting, typing, unknown fields, and the config's own checks."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from sevi.runtime.overrides import (
    apply_overrides,
    parse_value,
    split_assignments,
    split_flags,
)


@dataclass(frozen=True)
class Cfg:
    width: int = 16
    lr: float = 2e-3
    amp: str = "bf16"
    flag: bool = False
    electrons: tuple[int, int] = (40_000, 120_000)
    widths: tuple[float, ...] = (1.0,)
    packing: tuple = (0.985, 0.91)  # bare annotation: length and item type from the default
    name: str | None = None

    def __post_init__(self):
        if self.width < 1:
            raise ValueError(f"width must be >= 1, got {self.width}")


def test_split_flags_both_spellings_and_dashes():
    assert split_flags(["--width", "32", "--amp=none", "--spot-blur", "0.015"]) == {
        "width": "32", "amp": "none", "spot_blur": "0.015"}
    assert split_flags([]) == {}
    for bad, msg in ((["width", "3"], "unexpected argument 'width'"), (["--width"], "--width needs a value"),
                     (["--"], "unexpected argument")):
        with pytest.raises(ValueError, match=msg):
            split_flags(bad)


def test_split_assignments():
    assert split_assignments(["kappa=0.01", "packing_mean=0.98,0.9"]) == {"kappa": "0.01", "packing_mean": "0.98,0.9"}
    for bad in ("kappa", "=1", "kappa="):
        with pytest.raises(ValueError, match="expected FIELD=VALUE"):
            split_assignments([bad])


@pytest.mark.parametrize("typ,text,want", [
    (int, "32", 32), (int, "1e5", 100_000), (float, "1e-3", 1e-3), (str, "none", "none"),
    (bool, "true", True), (bool, "No", False), (bool, "1", True),
    (tuple[int, int], "1000,2000", (1000, 2000)), (tuple[int, int], "(1000, 2000)", (1000, 2000)),
    (tuple[float, ...], "1,2.5,3", (1.0, 2.5, 3.0)), (int | None, "none", None), (int | None, "7", 7),
])
def test_parse_value_types(typ, text, want):
    got = parse_value("f", typ, text)
    assert got == want and type(got) is type(want), (typ, text, got)


def test_bare_tuple_takes_length_and_item_type_from_the_default():
    # The closed-loop tool once turned "0.98,0.9" into a tuple of characters.
    assert parse_value("packing", tuple, "0.98,0.9", (0.985, 0.91)) == (0.98, 0.9)
    with pytest.raises(ValueError, match="expected 2 comma-separated values"):
        parse_value("packing", tuple, "0.98", (0.985, 0.91))


@pytest.mark.parametrize("typ,text,msg", [
    (int, "wide", "expected int"), (int, "1.5", "expected int"), (float, "x", "expected float"),
    (bool, "maybe", "expected bool"), (tuple[int, int], "1,2,3", "expected tuple"),
])
def test_parse_value_refuses_with_the_field_and_type(typ, text, msg):
    with pytest.raises(ValueError, match=f"override f={text!r}: {msg}"):
        parse_value("f", typ, text)


def test_apply_overrides():
    cfg = apply_overrides(Cfg(), {"width": "8", "lr": "1e-3", "electrons": "1000,2000", "flag": "yes",
                                  "packing": "0.9,0.8", "name": "run"})
    assert cfg == Cfg(width=8, lr=1e-3, electrons=(1000, 2000), flag=True, packing=(0.9, 0.8), name="run")
    assert apply_overrides(Cfg(), {"width": 4}).width == 4  # non-text values are taken as they are
    assert apply_overrides(Cfg(), None) == Cfg()
    with pytest.raises(ValueError, match="unknown Cfg field 'widht' \\(did you mean 'width'\\?\\); fields: width, lr"):
        apply_overrides(Cfg(), {"widht": "8"})
    with pytest.raises(ValueError, match="width must be >= 1"):  # the config's own check runs
        apply_overrides(Cfg(), {"width": "0"})
