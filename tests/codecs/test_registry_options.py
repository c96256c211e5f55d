"""Which options each codec takes is the codec's to say (the CLI only spells them as flags)."""

from __future__ import annotations

import pytest

from dstdformat.codecs.deepstd import DeepSTDVolumeCodec
from dstdformat.codecs.lossless import LosslessCodec
from dstdformat.errors import InvalidInputError


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def test_lossy_options_are_refused_by_the_exact_codec_in_the_callers_spelling():
    LosslessCodec.check_options({"clevel": 9})
    with pytest.raises(InvalidInputError, match="--max-error applies to lossy codecs"):
        LosslessCodec.check_options({"max_error": 5.0}, name_of=flag)


def test_deepstd_names_what_it_takes_and_what_an_option_needs():
    DeepSTDVolumeCodec.check_options(
        {"ratio": 64, "base": "av1", "shape": "default", "shape_policy": "always"}
    )
    with pytest.raises(InvalidInputError, match=r"clevel does not apply to codec 'deepstd' \(it takes ratio"):
        DeepSTDVolumeCodec.check_options({"clevel": 9})
    with pytest.raises(InvalidInputError, match="--shape-policy needs --shape TEMPLATE"):
        DeepSTDVolumeCodec.check_options({"shape_policy": "always"}, name_of=flag)
