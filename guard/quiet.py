"""Keep third-party chatter off the console of the app and the command line.

What is silenced, and why it is safe to:
- transformers' "`CLIPImageProcessor` requires torchvision (not installed); falling back to
  `CLIPImageProcessorPil`": the PIL processor is the one SVD's pipeline always used; torchvision is
  not needed (our attacks write their own differentiable CLIP preprocessing).
- PIL's `DecompressionBombWarning` (images above 89 megapixels): `guard.io.load_image` refuses images
  above its own, lower `MAX_PIXELS` with a sentence, so the warning only repeats that.
- the "Loading pipeline components" / "Loading weights" progress bars of diffusers and transformers
  (kept with `verbose`).

diffusers' "pip install accelerate" advice is not silenced: `accelerate` is in requirements.txt, and
the warning means the set-up is incomplete.
"""

from __future__ import annotations

import logging
import warnings


def quiet_third_party(verbose: bool = False) -> None:
    """Silence the messages above (call once, before a model loads); `verbose` keeps the progress bars."""
    import PIL.Image

    warnings.filterwarnings("ignore", category=PIL.Image.DecompressionBombWarning)
    logging.getLogger("transformers.utils.import_utils").setLevel(logging.ERROR)
    if not verbose:
        import diffusers.utils.logging
        import transformers.utils.logging

        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
