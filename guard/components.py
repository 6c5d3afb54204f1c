"""The page's Gradio inputs that hand a visitor's value to guard untouched, so that guard's own checks
answer with a sentence naming the parameter (`guard.io.load_image` for a photo, `guard.limits` for a
number) instead of Gradio's.
"""

import functools
import inspect

import gradio as gr


class UploadedImage(gr.Image):
    """A gr.Image input that hands the uploaded file over untouched: `guard.io.load_image` reads,
    checks and converts it. (Gradio's own preprocessing re-encodes a non-RGB upload as lossy WebP and
    answers a file that is not an image with a bare "Error".)"""

    is_template = True

    def preprocess(self, payload):
        if payload is None:
            return None
        if payload.path is None or (payload.url or "").startswith("data:"):  # a pasted data URL
            return super().preprocess(payload)
        return str(payload.path)


# Controls with Gradio's own check of the value removed: the value reaches the validator and the entry point,
# which refuse one out of bounds with a sentence naming the parameter (Gradio's says only "Value -1 is less
# than minimum value 0." and answers an API client with a bare "400 Bad Request").
class NamedSlider(gr.Slider):
    is_template, preprocess = True, lambda self, payload: payload


class NamedNumber(gr.Number):
    is_template, preprocess = True, lambda self, payload: payload


class NamedRadio(gr.Radio):
    is_template, preprocess = True, lambda self, payload: payload


class NamedDropdown(gr.Dropdown):
    is_template, preprocess = True, lambda self, payload: payload


def validator(entry, admission):
    """A Gradio validator for an entry point: one gr.validate per parameter of `entry` (but `progress`), refused
    with the sentence `admission(inputs, request)` gives for its name (a dict name -> sentence); loads nothing."""
    names = [name for name in inspect.signature(entry).parameters if name != "progress"]

    def validate(*values):
        *values, request = values
        refused = admission(dict(zip(names, values)), request)
        return [gr.validate(name not in refused, refused.get(name, "")) for name in names]

    parameter = functools.partial(inspect.Parameter, kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
    validate.__signature__ = inspect.Signature([parameter(n) for n in names] + [parameter("request", annotation=gr.Request)])
    validate.__annotations__ = {"request": gr.Request}  # what Gradio reads to pass the request
    return validate
