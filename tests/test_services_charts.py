"""Dashboard figures: titles and units, money axes, colours by sign, zero shared by the
two axes of the time chart, and no failure on a period without play."""

from __future__ import annotations

import pandas as pd
import pytest

from smib_core.analytics.charts import WEEKDAYS
from smib_core.services import charts


def days(net_win: list[float], coin_in: list[float]) -> pd.DataFrame:
    bucket = pd.date_range("2024-05-13", periods=len(net_win), freq="D", tz="UTC")
    return pd.DataFrame({"bucket": bucket, "net_win": net_win, "coin_in": coin_in})


def cabinets(*rows: tuple[str, float]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "cabinet": [r[0] for r in rows],
            "cabinet_id": [r[0].lower() for r in rows],
            "location": "Main floor",
            "net_win": [r[1] for r in rows],
            "coin_in": 100.0,
            "hold_pct": [r[1] for r in rows],
        }
    )


def test_time_chart_shares_zero_between_its_axes() -> None:
    figure = charts.over_time_figure(days([30.0, -10.0, 20.0], [300.0, 200.0, 250.0]), False)
    assert figure.layout.title.text == "Net win and coin in per gaming day"
    left, right = figure.layout.yaxis.range, figure.layout.yaxis2.range
    assert left[0] / (left[1] - left[0]) == pytest.approx(right[0] / (right[1] - right[0]))
    assert left[0] < 0 < left[1] and right[0] < 0 < right[1]
    assert figure.layout.yaxis.tickprefix == "$" and figure.layout.yaxis.title.text == "Coin in ($)"
    hourly = charts.over_time_figure(days([1.0], [2.0]), True)
    assert hourly.layout.title.text == "Net win and coin in per hour"


def test_top_and_bottom_in_one_ranking() -> None:
    top = cabinets(("A", 50.0), ("B", 20.0))
    bottom = cabinets(("D", -30.0), ("C", 5.0))
    figure = charts.top_bottom_figure(top, bottom)
    bars = figure.data[0]
    assert list(bars.y) == ["D", "C", "B", "A"]  # drawn bottom up: best on top
    assert bars.marker.color[0] == charts.LOSS and bars.marker.color[-1] == charts.NET_WIN
    assert figure.layout.title.text == "Top 2 and bottom 2 cabinets by net win"
    few = charts.top_bottom_figure(cabinets(("A", 1.0)), cabinets(("A", 1.0)))
    assert few.layout.title.text == "Cabinets by net win" and len(few.data[0].y) == 1


def test_location_hold_and_heatmap_figures() -> None:
    by_location = cabinets(("x", 1.0)).rename(columns={"cabinet": "unused"})
    assert charts.location_figure(by_location).layout.title.text == "Net win by location"
    hold = charts.hold_figure(cabinets(("A", 12.0), ("B", -3.0)), 4.5)
    assert hold.layout.yaxis.ticksuffix == "%"
    assert hold.layout.annotations[0].text == "all cabinets 4.50%"
    grid = pd.DataFrame(0.0, index=list(WEEKDAYS), columns=range(24))
    heat = charts.heatmap_figure(grid)
    assert heat.data[0].x[0] == "00:00" and list(heat.data[0].y) == list(WEEKDAYS)


def test_empty_frames_make_empty_charts() -> None:
    empty = cabinets()
    assert len(charts.over_time_figure(days([], []), False).data) == 2
    assert len(charts.top_bottom_figure(empty, empty).data[0].y) == 0
    assert len(charts.hold_figure(empty, None).layout.annotations) == 0


def test_names_reach_plotly_as_text_not_html() -> None:
    # Plotly renders a subset of HTML in labels and hover texts: a cabinet named with a
    # link or a style would become one on every manager's dashboard.
    hostile = '<a href="http://evil.example/x">Lucky</a><b>7</b>'
    rows = cabinets((hostile, 5.0), ("Plain & simple", -2.0))
    rows.loc[0, "location"] = "<span style='color:red'>VIP</span>"
    shown = [
        *charts.top_bottom_figure(rows.iloc[:1], rows.iloc[1:]).data[0].y,
        *charts.hold_figure(rows, 1.0).data[0].x,
        *charts.location_figure(
            rows.rename(columns={"cabinet": "unused"}).assign(location=rows["location"])
        )
        .data[0]
        .y,
    ]
    hover_locations = [c[0] for c in charts.hold_figure(rows, 1.0).data[0].customdata]
    for text in [*shown, *hover_locations]:
        assert "<" not in text and ">" not in text
    assert '&lt;a href="http://evil.example/x"&gt;Lucky&lt;/a&gt;&lt;b&gt;7&lt;/b&gt;' in shown
    assert "Plain &amp; simple" in shown
    assert "&lt;span style='color:red'&gt;VIP&lt;/span&gt;" in hover_locations
