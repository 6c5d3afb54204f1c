"""What a push to a Hugging Face Space needs, checked offline: the README's front matter is a Space card, every
large file goes through Git LFS, and the card names the hub models the Space can load."""

import fnmatch
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from guard.targets import FAMILIES

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
#: the Hub refuses a plain git push of a file over 10 MB (10**7 bytes: the stricter reading of "10 MB")
LFS_ABOVE = 10**7


def front_matter() -> dict:
    text = README.read_text(encoding="utf-8")
    assert text.startswith("---\n"), "README.md must open with a YAML front matter block (the Space's card)"
    return yaml.safe_load(text.split("---\n", 2)[1])


def lfs_patterns() -> list[str]:
    lines = (ROOT / ".gitattributes").read_text().splitlines()
    return [line.split()[0] for line in lines if line.strip() and not line.startswith("#") and "filter=lfs" in line]


def covered(path: str, patterns: list[str]) -> bool:
    """Whether a repository path matches a .gitattributes pattern (one without a slash matches the file's name
    at any depth, as in git)."""
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path if "/" in pattern else name, pattern.lstrip("/")) for pattern in patterns)


def test_the_readme_front_matter_is_a_space_card():
    meta = front_matter()
    for key in ("sdk", "app_file", "python_version", "sdk_version", "license"):
        assert meta.get(key), f"front matter: {key} is missing"
    assert meta["sdk"] == "gradio" and (ROOT / meta["app_file"]).is_file()
    assert isinstance(meta["python_version"], str)  # unquoted 3.10 would read as the number 3.1
    huggingface_hub = pytest.importorskip("huggingface_hub")
    card = huggingface_hub.SpaceCard.load(README)  # the Hub's own parser of a Space's README
    assert card.data.sdk == meta["sdk"] and card.data.app_file == meta["app_file"]


def test_the_card_names_every_hub_model_the_space_can_load():
    hub_ids = {path for family in FAMILIES.values() for path in family.models.values()
               if "/" in path and not Path(path).is_absolute()}
    assert hub_ids >= {"Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "Lightricks/LTX-Video"}
    missing = hub_ids - set(front_matter().get("models") or [])
    assert not missing, f"add to the README front matter's models: {sorted(missing)}"


def test_every_tracked_file_over_10_mb_goes_through_lfs():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    patterns = lfs_patterns()
    assert "*.safetensors" in patterns
    large = [path for path in files.split("\0") if path and (ROOT / path).is_file()
             and (ROOT / path).stat().st_size > LFS_ABOVE]
    assert "guard/models/embedded/unet/diffusion_pytorch_model.safetensors" in large  # the check sees the weights
    uncovered = [path for path in large if not covered(path, patterns)]
    assert not uncovered, f"files over 10 MB without an LFS pattern in .gitattributes: {uncovered}"


def test_the_pattern_match_reads_gitattributes_as_git_does():
    assert covered("a/b/model.safetensors", ["*.safetensors"])
    assert covered("clip.tar.gz", ["*.tar.*"])
    assert not covered("a/b/model.safetensors", ["b/*.safetensors"])
    assert covered("b/model.safetensors", ["b/*.safetensors"])
    assert not covered("weights.safetensors.txt", ["*.safetensors"])


def test_the_space_installs_a_torch_zerogpu_supports():
    """ZeroGPU supports PyTorch 2.8-2.11 (../shared/NOTES.md): the torch that requirements.txt installs on the
    Space's Python (the front matter's python_version) is within that range."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    python = str(front_matter()["python_version"])
    pins = [Requirement(line.split("#")[0]) for line in (ROOT / "requirements.txt").read_text().splitlines()
            if line.split("#")[0].strip().startswith("torch")]
    chosen = [r for r in pins if r.marker is None or r.marker.evaluate({"python_version": python})]
    assert len(chosen) == 1, chosen
    (spec,) = chosen[0].specifier
    assert Version("2.8") <= Version(spec.version) < Version("2.12"), chosen[0]
