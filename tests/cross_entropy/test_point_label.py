"""A point's one-line label names the loss options that are on, so that two points of a sweep over
an option do not print the same progress line."""

from harness.cross_entropy.point import Point


def test_the_label_names_the_options_away_from_their_defaults():
    plain = Point(8, 50, "fp32", 2.0, "cpu", "hard", seed=3)
    assert plain.label() == "B=8 C=50 fp32 scale=2 hard cpu seed=3"
    laid = Point(
        8, 50, "fp32", 2.0, "cpu", "hard", seed=3, spatial_size=4, softcap=30.0, class_weights=(1.0,) * 50
    )
    assert laid.label() == plain.label() + " spatial_size=4 softcap=30 class_weights=given"
