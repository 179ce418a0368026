"""Tests for broker.svgplot: line charts of time series as inline SVG for the ops pages."""

import math
import re
import time
import xml.etree.ElementTree as ET

import pytest

from broker.svgplot import Series, format_value, line_chart, nice_ceiling, time_ticks

SVG = "{http://www.w3.org/2000/svg}"
NOON = 1_704_110_400  # 2024-01-01 12:00:00 UTC
HOUR = 3600


def chart(*series: Series, **options) -> ET.Element:
    options.setdefault("title", "Throughput")
    return ET.fromstring(line_chart(series, **options))


def minutely(label: str, values) -> Series:
    """A series with one sample a minute from NOON."""
    return Series(label, [(NOON + 60 * i, value) for i, value in enumerate(values)])


def frame(root: ET.Element) -> tuple[float, float, float, float]:
    """The plot area: left, top, right, bottom."""
    rect = root.find(f".//{SVG}rect[@class='frame']")
    left, top = float(rect.get("x")), float(rect.get("y"))
    return left, top, left + float(rect.get("width")), top + float(rect.get("height"))


def polylines(root: ET.Element) -> list[list[tuple[float, float]]]:
    return [
        [tuple(map(float, pair.split(","))) for pair in line.get("points").split()]
        for line in root.iter(f"{SVG}polyline")
    ]


def texts(root: ET.Element, group: str) -> list[str]:
    return [text.text for text in root.findall(f".//{SVG}g[@class='{group}']/{SVG}text")]


@pytest.fixture
def new_york_time(monkeypatch):
    """Sets the local time zone to one far from UTC, so a local-time label shows."""
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


# The element


def test_chart_is_an_svg_element_scaled_by_its_view_box():
    root = chart(minutely("auth", [1, 2]))
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") == "0 0 600 160"
    assert root.get("width") == "100%"
    assert root.get("preserveAspectRatio") == "xMidYMid meet"


def test_view_box_follows_the_requested_size():
    root = chart(minutely("auth", [1, 2]), width=360, height=140)
    assert root.get("viewBox") == "0 0 360 140"


def test_chart_is_an_image_named_by_its_title():
    root = chart(minutely("auth", [1, 2]), title="Throughput")
    assert root.get("role") == "img"
    assert root.get("aria-label") == "Throughput"
    assert root.find(f"{SVG}title").text == "Throughput"


def test_desc_gives_each_series_latest_and_max_value_with_the_unit():
    # Given two series whose latest value is not their largest
    auth = minutely("auth", [3, 40, 12.5])
    payments = minutely("payments", [1200, 7])
    # When charted
    desc = chart(auth, payments, unit="msg/s").find(f"{SVG}desc").text
    # Then the text alternative states both values of each
    assert "auth: latest 12.5 msg/s, max 40 msg/s" in desc
    assert "payments: latest 7 msg/s, max 1.2k msg/s" in desc


def test_desc_says_which_series_has_no_data():
    desc = chart(minutely("auth", [5, 6]), minutely("idle", [None, None])).find(f"{SVG}desc").text
    assert "idle: no data" in desc


def test_the_same_samples_render_the_same_markup():
    series = [minutely("auth", [5, None, 7, 9]), minutely("payments", [1, 2, 3, 4])]
    assert line_chart(series, title="Lag") == line_chart(list(series), title="Lag")


def test_coordinates_have_at_most_one_decimal():
    markup = line_chart([minutely("auth", [1 / 3, 2 / 3, 37.123456])], title="Lag", width=613, height=157)
    numbers = re.findall(r"\d+\.\d+", " ".join(re.findall(r'(?:points|x\d?|y\d?|width|height)="([^"]*)"', markup)))
    assert numbers
    assert all(len(number.split(".")[1]) == 1 for number in numbers)


# Lines


def test_first_and_last_samples_are_on_the_left_and_right_edges():
    root = chart(minutely("auth", [4, 8, 6]))
    left, _, right, _ = frame(root)
    (line,) = polylines(root)
    assert line[0][0] == pytest.approx(left, abs=0.1)
    assert line[-1][0] == pytest.approx(right, abs=0.1)


def test_largest_value_is_highest_and_within_the_plot():
    # Given a series rising from 0 to its maximum
    root = chart(minutely("auth", [0, 20, 37]))
    _, top, _, bottom = frame(root)
    (line,) = polylines(root)
    # Then 0 is on the baseline and y decreases upward to the maximum, not above the plot's top
    assert line[0][1] == pytest.approx(bottom, abs=0.1)
    assert top <= line[2][1] < line[1][1] < line[0][1]


def test_samples_in_any_order_draw_the_same_line():
    in_order = minutely("auth", [1, 5, 3, 8])
    shuffled = Series("auth", [in_order.points[i] for i in (2, 0, 3, 1)])
    assert polylines(chart(shuffled)) == polylines(chart(in_order))


@pytest.mark.parametrize("gap", [None, math.nan, math.inf])
def test_a_gap_splits_a_series_into_two_polylines(gap):
    root = chart(minutely("auth", [1, 2, 3, gap, 5, 6]))
    assert [len(line) for line in polylines(root)] == [3, 2]


def test_a_lone_sample_between_gaps_is_drawn_as_a_dot():
    root = chart(minutely("auth", [1, 2, None, 4, None, 6, 7]))
    assert len(polylines(root)) == 2
    assert len(root.findall(f".//{SVG}circle")) == 1


def test_samples_outside_the_window_are_left_out():
    # Given samples over ten minutes, and a window of the middle four
    series = minutely("auth", range(11))
    # When charted
    root = chart(series, start=NOON + 3 * 60, end=NOON + 7 * 60)
    # Then only the five samples inside it are drawn, from edge to edge
    left, _, right, _ = frame(root)
    (line,) = polylines(root)
    assert len(line) == 5
    assert (line[0][0], line[-1][0]) == (pytest.approx(left, abs=0.1), pytest.approx(right, abs=0.1))


def test_negative_values_are_drawn_on_the_baseline():
    root = chart(minutely("auth", [-5, 10]))
    _, _, _, bottom = frame(root)
    assert polylines(root)[0][0][1] == pytest.approx(bottom, abs=0.1)


def test_two_series_differ_in_colour_and_dash_pattern():
    root = chart(minutely("auth", [1, 2]), minutely("payments", [3, 4]))
    first, second = root.iter(f"{SVG}polyline")
    assert first.get("stroke") != second.get("stroke")
    assert first.get("stroke-dasharray") != second.get("stroke-dasharray")


def test_legend_names_every_series_with_its_line_style():
    root = chart(minutely("auth", [1, 2]), minutely("payments", [3, 4]))
    legend = root.find(f".//{SVG}g[@class='legend']")
    samples = [(line.get("stroke"), line.get("stroke-dasharray")) for line in legend.iter(f"{SVG}line")]
    drawn = [(line.get("stroke"), line.get("stroke-dasharray")) for line in root.iter(f"{SVG}polyline")]
    assert texts(root, "legend") == ["auth", "payments"]
    assert samples == drawn


def test_labels_and_title_with_markup_characters_are_escaped():
    # Given a label and a title with characters that mean something in XML
    nasty = 'a<b & "c"'
    # When charted, the markup still parses and shows the text as written
    root = chart(minutely(nasty, [1, 2]), title=nasty, unit="<&>")
    assert root.get("aria-label") == nasty
    assert root.find(f"{SVG}title").text == nasty
    assert texts(root, "legend") == [nasty]
    assert root.find(f"{SVG}desc").text.count(nasty) == 1


def test_characters_xml_forbids_are_dropped_from_labels():
    root = chart(minutely("au\x00th\x1b", [1, 2]), title="Lag\x07")
    assert texts(root, "legend") == ["auth"]
    assert root.get("aria-label") == "Lag"


# Axes


def test_y_axis_tops_at_a_nice_number_above_the_data():
    labels = texts(chart(minutely("auth", [3, 37, 12])), "axis y-axis")
    assert labels[-1] == "50"
    assert labels[0] == "0"


def test_all_zero_data_gets_a_y_axis_up_to_one():
    labels = texts(chart(minutely("auth", [0, 0, 0])), "axis y-axis")
    assert labels[-1] == "1"


@pytest.mark.parametrize("data_max", [0.03, 1, 2.2, 37, 999, 1800, 4e6])
def test_y_axis_has_three_to_five_gridlines_above_the_baseline(data_max):
    root = chart(minutely("auth", [0, data_max]))
    assert 3 <= len(root.findall(f".//{SVG}line[@class='grid']")) <= 5


def test_time_labels_are_utc_clock_times(new_york_time):
    root = chart(minutely("auth", [1] * 61))
    assert texts(root, "axis x-axis") == ["12:00", "12:15", "12:30", "12:45", "13:00"]


@pytest.mark.parametrize("offset", [0, 7 * 60, 23 * 60 + 30])
def test_an_hour_has_three_to_seven_time_labels(offset):
    labels = texts(chart(minutely("auth", [1, 2]), start=NOON + offset, end=NOON + offset + HOUR), "axis x-axis")
    assert 3 <= len(labels) <= 7
    assert all(re.fullmatch(r"\d\d:\d\d", label) for label in labels)


def test_a_single_timestamp_still_gets_a_time_axis():
    root = chart(Series("auth", [(NOON, 5)]))
    assert texts(root, "axis x-axis")


def test_end_before_start_is_an_error():
    with pytest.raises(ValueError, match="before its start"):
        line_chart([], title="Lag", start=NOON, end=NOON - 1)


def test_a_chart_too_small_for_its_labels_is_an_error():
    with pytest.raises(ValueError, match="below the minimum"):
        line_chart([], title="Lag", width=100)


# No data


@pytest.mark.parametrize("series", [[], [Series("auth", [])], [minutely("auth", [None, math.nan])]])
def test_no_values_draw_an_empty_frame_saying_no_data(series):
    root = ET.fromstring(line_chart(series, title="Lag"))
    assert root.find(f".//{SVG}text[@class='empty']").text == "no data"
    assert root.find(f".//{SVG}rect[@class='frame']") is not None
    assert not polylines(root)


def test_samples_all_before_a_given_start_say_no_data():
    root = ET.fromstring(line_chart([minutely("auth", [1, 2])], title="Lag", start=NOON + HOUR))
    assert root.find(f".//{SVG}text[@class='empty']").text == "no data"


# nice_ceiling, format_value, time_ticks


@pytest.mark.parametrize(
    ("value", "ceiling"),
    [(37, 50), (40, 50), (50, 50), (1, 1), (1.01, 2), (2.1, 2.5), (0.3, 0.5), (1200, 2000), (0, 1), (-3, 1)],
)
def test_nice_ceiling_is_the_next_1_2_2_5_or_5_times_a_power_of_ten(value, ceiling):
    assert nice_ceiling(value) == ceiling


@pytest.mark.parametrize(
    ("value", "text"),
    [(0, "0"), (0.5, "0.5"), (15, "15"), (12.5, "12.5"), (1200, "1.2k"), (999_960, "1M"), (3.4e6, "3.4M")],
)
def test_format_value_is_compact(value, text):
    assert format_value(value) == text


@pytest.mark.parametrize("span", [5 * 60, 10 * 60, 45 * 60, HOUR, 3 * HOUR, 6 * HOUR, 24 * HOUR])
def test_time_ticks_are_three_to_seven_round_times_inside_the_window(span):
    start = NOON + 17
    ticks = time_ticks(start, start + span)
    assert 3 <= len(ticks) <= 7
    assert all(start <= tick <= start + span and tick % 60 == 0 for tick in ticks)
