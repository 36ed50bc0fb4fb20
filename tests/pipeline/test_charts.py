"""The SVG charts, against positions computed by hand."""

import xml.dom.minidom

import pytest

from cxr.pipeline.charts import bar_chart, line_chart, nice_ticks


def parse(svg):
    return xml.dom.minidom.parseString(svg)  # well-formed XML, or this raises


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 0.87) == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert nice_ticks(3.42, 4.84) == [3.0, 3.5, 4.0, 4.5, 5.0]
    # one value: centred in a widened range (not divided by zero, not at the range's edge)
    assert nice_ticks(1, 1) == [0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]
    assert nice_ticks(4, 4) == [2.0, 3.0, 4.0, 5.0, 6.0]
    with pytest.raises(ValueError):
        nice_ticks(0, float("nan"))


def test_line_chart_maps_data_to_the_plot_area():
    # x ticks 0..10 (step 2), y ticks 0..1 (step 0.2);
    # plot area x 60..410 (560-60-150), y 30..275 (320-30-45).
    svg = line_chart(
        [("a", [0, 10], [0.0, 1.0]), ("b", [5], [0.5])], title="t", x_label="x", y_label="y"
    )
    document = parse(svg)
    polyline = document.getElementsByTagName("polyline")[0].getAttribute("points")
    assert polyline == "60.0,275.0 410.0,30.0"
    single = document.getElementsByTagName("circle")  # one-point series get a marker
    assert [(c.getAttribute("cx"), c.getAttribute("cy")) for c in single] == [("235.0", "152.5")]
    assert [t.firstChild.data for t in document.getElementsByTagName("text")].count(
        "a"
    ) == 1  # legend


def test_line_chart_skips_missing_values_and_refuses_empty_data():
    svg = line_chart([("a", [0, 1, 2], [0.0, None, 1.0])], title="t", x_label="x", y_label="y")
    assert parse(svg).getElementsByTagName("polyline")[0].getAttribute("points").count(",") == 2
    with pytest.raises(ValueError, match="no data"):
        line_chart([("a", [0], [None])], title="empty", x_label="x", y_label="y")


def test_bar_lengths_are_proportional_and_missing_values_say_na():
    # x ticks 0..0.8 (step 0.2); plot width 560 - 150 - 30 = 380 px.
    svg = bar_chart(
        ["c1", "c2"], [("ssl", [0.4, None]), ("random", [0.8, 0.2])], title="t", x_label="AP"
    )
    document = parse(svg)
    bars = [r for r in document.getElementsByTagName("rect") if r.getAttribute("height") == "7"]
    assert [float(r.getAttribute("width")) for r in bars] == [190.0, 380.0, 95.0]
    assert "n/a" in [t.firstChild.data for t in document.getElementsByTagName("text")]
