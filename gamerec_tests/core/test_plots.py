import io

from PIL import Image

from gamerec_assets.core.plots import training_curve_png


def test_training_curve_is_a_png_of_the_expected_size():
    png = training_curve_png({"tune": [6.1, 5.8, 5.7], "refit": [6.0, 5.6]}, [0.21, 0.25, 0.24])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    image = Image.open(io.BytesIO(png))
    assert image.size == (600, 320)
    # something was drawn: more than a handful of distinct colours
    assert len(image.convert("RGB").getcolors(maxcolors=1 << 16) or []) > 10


def test_training_curve_without_tuning_scores():
    png = training_curve_png({"train": [1.0]})
    assert Image.open(io.BytesIO(png)).format == "PNG"
