"""guard.links: a query string carries every setting of a result, and a bad one gets a sentence, never a traceback."""

import pytest

from guard import limits, links

DEFAULTS = dict(method="vidfreeze", eps=8, steps=10, model="embedded", seed=0, randomize_seed=False, frames=0,
                motion_bucket=127, video_steps=0, robust=False)
OFFERED = dict(methods=["vidfreeze", "freeze", "i2vguard", "photoguard", "noise"], models=["embedded", "tiny-svd"],
               examples=["chelsea.png", "rocket.png"])


def decode(query, defaults=DEFAULTS):
    return links.decode(query, defaults, **OFFERED)


@pytest.mark.parametrize("settings", [
    dict(method="i2vguard", eps=5, steps=37, model="tiny-svd", seed=limits.MAX_SEED, frames=14, video_steps=25,
         motion_bucket=0, robust=True),
    dict(method="noise", eps=limits.MAX_EPS, steps=0, model="embedded", seed=0, frames=0, video_steps=0,
         motion_bucket=255, robust=False),
    dict(method="photoguard", eps=1, steps=limits.MAX_STEPS, model="embedded", seed=12345, frames=limits.MAX_FRAMES,
         video_steps=limits.MAX_VIDEO_STEPS, motion_bucket=60, robust=False),
])
@pytest.mark.parametrize("example", [None, "rocket.png"])
def test_every_setting_round_trips(settings, example):
    query = links.encode(settings, example)
    for form in (query, "?" + query, dict(pair.split("=") for pair in query.split("&"))):
        link = decode(form)
        assert link.problems == [] and link.example == example and link.given
        assert {name: link.settings[name] for name in settings} == settings
        assert link.settings["randomize_seed"] is False
    # each value differs from the defaults somewhere, so a field left out of the query would show
    assert links.encode(decode(query).settings, example) == query


def test_the_query_names_every_field_once_and_nothing_else():
    query = links.encode({**DEFAULTS, "randomize_seed": True, "other": 1}, "chelsea.png")
    names = [pair.split("=")[0] for pair in query.split("&")]
    assert names == ["example", *links.FIELDS]
    assert links.encode(dict(model="a b&c=d")) == "model=a+b%26c%3Dd"  # escaped: one value stays one value
    assert decode("model=a+b%26c%3Dd").problems[0].startswith("This link's model must be one of embedded, tiny-svd")


def test_no_query_gives_the_defaults():
    for query in ("", "?", {}, "__theme=dark&logs=container"):  # the host's own names are ignored
        link = decode(query)
        assert link.settings == DEFAULTS and link.problems == [] and link.example is None and not link.given


@pytest.mark.parametrize("query, words", [
    ("eps=500", "This link's eps must be between 1 and 32, got '500': the page's default (8) is used instead."),
    ("eps=0", "eps must be between 1 and 32, got '0'"),
    ("eps=2.5", "eps must be a whole number between 1 and 32, got '2.5'"),
    ("steps=abc", "steps must be a whole number between 0 and 200, got 'abc'"),
    ("steps=", "steps must be a whole number between 0 and 200, got ''"),
    ("seed=-1", "seed must be between 0 and 2147483647, got '-1'"),
    ("seed=nan", "seed must be a whole number"),
    ("frames=1", "frames must be 0 (the model's default) or a whole number between 2 and 49, got '1'"),
    ("video_steps=51", "video_steps must be between 0 and 50, got '51'"),
    ("motion_bucket=256", "motion_bucket must be between 0 and 255, got '256'"),
    ("robust=maybe", "robust must be 1 or 0, got 'maybe': the page's default (False) is used instead."),
    ("method=magic", "method must be one of vidfreeze, freeze, i2vguard, photoguard, noise, got 'magic'"),
    ("model=../../etc/passwd", "model must be one of embedded, tiny-svd, got '../../etc/passwd'"),
    ("example=../app.py", "example must be one of chelsea.png, rocket.png, got '../app.py': no example is shown."),
    ("eps=" + "9" * 500, "got '" + "9" * links.SHOWN_CHARS + "...'"),  # a long value is cut, not echoed whole
])
def test_a_bad_value_gets_a_sentence_and_keeps_the_default(query, words):
    name = query.split("=")[0]
    neighbour = ("seed", 7) if name != "seed" else ("eps", 5)
    link = decode(f"{neighbour[0]}={neighbour[1]}&{query}")
    assert len(link.problems) == 1 and words in link.problems[0], link.problems
    assert "Traceback" not in link.problems[0] and len(link.problems[0]) < 200
    if name != "example":
        assert link.settings[name] == DEFAULTS[name]
    assert link.example is None and link.settings[neighbour[0]] == neighbour[1]  # the good value is kept
    assert set(link.settings) == set(DEFAULTS)  # every control still gets a value


def test_good_values_survive_a_bad_neighbour():
    link = decode("example=chelsea.png&eps=5&steps=-3&seed=42&robust=on")
    assert link.example == "chelsea.png" and link.settings["eps"] == 5 and link.settings["seed"] == 42
    assert link.settings["robust"] is True and link.settings["steps"] == DEFAULTS["steps"]
    assert [p.split(" must")[0] for p in link.problems] == ["This link's steps"]
