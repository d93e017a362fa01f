"""Local Evaluate refuses an unreadable image as the cluster client does: per example, before the LM."""

from __future__ import annotations

import base64

import dspex
from dspex.utils import DummyLM

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32).decode()
NOT_AN_IMAGE = "data:image/png;base64," + base64.b64encode(b"plain text, not a picture").decode()


class Describe(dspex.Signature):
    picture: dspex.Image = dspex.InputField()
    caption: str = dspex.OutputField()


def test_an_unreadable_image_fails_its_example_naming_it_before_any_lm_call() -> None:
    lm = DummyLM([{"caption": "a picture"}])
    devset = [
        dspex.Example(picture=dspex.Image(PNG), caption="a picture").with_inputs("picture"),
        dspex.Example(picture=dspex.Image(NOT_AN_IMAGE), caption="a picture").with_inputs("picture"),
    ]
    evaluate = dspex.Evaluate(devset=devset, metric=lambda example, pred, trace=None: 1.0, max_errors=5)
    with dspex.context(lm=lm):
        result = evaluate(dspex.Predict(Describe))
    errors = {record.index: record.error for record in result.records if record.error}
    assert list(errors) == [1]
    assert "field 'picture' of example 1: the image cannot be read" in errors[1]
    assert len(lm.history) == 1  # only the readable example reached the LM
