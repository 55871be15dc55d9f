"""Numbers read the same in every report."""

from dyn_adapter.reporting import fraction, percent, points


def test_an_accuracy_with_and_without_its_interval():
    assert fraction(0.83704, [0.82661, 0.84719]) == "0.8370 [0.8266, 0.8472]"
    assert fraction(0.83704) == "0.8370" and fraction(None) == "n/a"
    assert percent(0.83704, [0.82661, 0.84719]) == "83.70 [82.66, 84.72]"
    assert percent(0.83704, [0.82661, 0.84719], interval_digits=1) == "83.70 [82.7, 84.7]"
    assert percent(None, [0.1, 0.2]) == "n/a"


def test_a_difference_is_signed_in_points():
    assert points(0.0123, [-0.003, 0.0251]) == "+1.23 [-0.30, +2.51]"
    assert points(-0.005, [-0.01, 0.0], " points") == "-0.50 points [-1.00, +0.00]"
