"""Live graphs (pyqtgraph), redrawn from `Aggregator` by a 2-4 Hz timer.

- requests/s stacked by status class,
- p50/p95/p99 latency over time (log y),
- latency histogram with a log x axis,
with a 1/5/15 minute window selector and a hover read-out that follows the mouse.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (
    QComboBox,
    QGraphicsView,
    QHBoxLayout,
    QLabel,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ngxscope.store.aggregate import BIN_EDGES_MS, Aggregator, Series

from .tablemodel import DASH, fmt_ms

__all__ = ["GraphsPanel", "HoverReadout", "steady", "style_plot", "time_span"]

pg.setConfigOptions(antialias=False, foreground="k")

STACK = [  # (name, class indexes, colour) bottom → top
    ("2xx", (1,), "#2e9d4f"),
    ("3xx", (2,), "#2f7fc1"),
    ("4xx", (3,), "#d9822b"),
    ("5xx", (4,), "#d64545"),
    ("other", (0, 5), "#8a8f98"),
]
PCT_COLORS = (("p50", "#2f7fc1"), ("p95", "#d9822b"), ("p99", "#d64545"))
WINDOWS = (("1 min", 60), ("5 min", 300), ("15 min", 900))
MIN_SPAN_S = 3.0
"""The shortest time axis shown while a capture is younger than the window."""


def time_span(first: float | None, last: float, window_s: float) -> tuple[float, float]:
    """The x range of a time graph: the window, or [first data, last] until it fills."""
    lo = last - window_s + 1
    if first is not None and first > lo:
        lo = min(float(first), last - MIN_SPAN_S)
    return lo, last


def _tint(color: QColor, amount: float = 0.25) -> QColor:
    """`color` lightened towards white, opaque (alpha blending makes repaints slow)."""
    return QColor(
        int(color.red() + (255 - color.red()) * amount),
        int(color.green() + (255 - color.green()) * amount),
        int(color.blue() + (255 - color.blue()) * amount),
    )


def _axis_ms(ms: float) -> str:
    if ms < 1.0:
        return f"{ms * 1000:g} µs"
    if ms < 1000.0:
        return f"{ms:g} ms"
    return f"{ms / 1000:g} s"


class LogMsAxis(pg.AxisItem):
    """A log10 axis over milliseconds labelled "10 ms", "1 s" (1-2-5 when zoomed in)."""

    def logTickStrings(self, values: list[float], scale: float, spacing: float) -> list[str]:
        decades = sum(1 for v in values if abs(v - round(v)) < 1e-6)
        out = []
        for v in values:
            ms = 10 ** float(v) * scale
            mant = ms / 10 ** np.floor(np.log10(ms) + 1e-9)
            if abs(mant - 1) < 1e-3 or (decades <= 2 and min(abs(mant - 2), abs(mant - 5))
                                        < 1e-3):
                out.append(_axis_ms(float(f"{ms:.3g}")))
            else:
                out.append("")
        return out


def style_plot(plot: pg.PlotWidget, palette: QPalette) -> None:
    """Colour a plot from the widget palette (dark/light follow the system)."""
    bg = palette.color(QPalette.ColorRole.Base)
    fg = palette.color(QPalette.ColorRole.WindowText)
    plot.setBackground(bg)
    item = plot.getPlotItem()
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(fg))
        axis.setTextPen(pg.mkPen(fg))
    item.titleLabel.setAttr("color", fg.name())
    item.titleLabel.setText(item.titleLabel.text)
    legend = item.legend
    if legend is not None:
        legend.setLabelTextColor(fg)
        back = QColor(bg)
        back.setAlpha(210)
        legend.setBrush(pg.mkBrush(back))
        for _sample, label in legend.items:
            label.setText(label.text, color=fg)
    # no grid: pyqtgraph's alpha grid costs ~5x the rest of a repaint


def _make_plot(title: str, left: str, bottom: str, *, date_axis: bool,
               log_axis: str | None = None) -> pg.PlotWidget:
    axis: dict[str, pg.AxisItem] = {}
    if date_axis:
        axis["bottom"] = pg.DateAxisItem(orientation="bottom")
    if log_axis:
        axis[log_axis] = LogMsAxis(orientation=log_axis)
    plot = pg.PlotWidget(axisItems=axis)
    item = plot.getPlotItem()
    item.setTitle(title, size="10pt")
    item.setLabel("left", left)
    item.setLabel("bottom", bottom)
    item.setDownsampling(auto=True, mode="peak")
    item.setClipToView(True)
    item.setMenuEnabled(False)
    item.hideButtons()
    item.disableAutoRange()
    plot.setMouseEnabled(x=False, y=False)
    plot.setMinimumHeight(150)
    steady(plot)
    return plot


def steady(plot: pg.PlotWidget) -> None:
    """Cheap, steady redraws: one full repaint per frame, fixed-width left axis."""
    plot.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.FullViewportUpdate)
    plot.getPlotItem().getAxis("left").setWidth(62)


class HoverReadout:
    """A vertical line and a text label following the mouse over a plot."""

    def __init__(self, plot: pg.PlotWidget, describe: Callable[[float], str | None]) -> None:
        self.plot = plot
        self.describe = describe
        self.line = pg.InfiniteLine(angle=90, movable=False, pen=pg.mkPen("#888", width=1))
        self.label = pg.TextItem("", anchor=(0, 0), fill=pg.mkBrush(30, 30, 30, 200),
                                 color="w")
        for item in (self.line, self.label):
            item.setZValue(100)
            item.setVisible(False)
            plot.addItem(item, ignoreBounds=True)
        plot.scene().sigMouseMoved.connect(self.on_move)
        self.last_text = ""

    def on_move(self, pos: QPointF) -> None:
        vb = self.plot.getPlotItem().getViewBox()
        if not self.plot.sceneBoundingRect().contains(pos) or not vb.sceneBoundingRect().contains(
            pos
        ):
            self.hide()
            return
        p = vb.mapSceneToView(pos)
        text = self.describe(p.x())
        if not text:
            self.hide()
            return
        self.last_text = text
        self.line.setPos(p.x())
        self.label.setText(text)
        (x0, x1), (y0, y1) = vb.viewRange()
        # next to the pointer, flipped so it stays inside the view
        right = p.x() > (x0 + x1) / 2
        low = p.y() < (y0 + y1) / 2
        self.label.setAnchor((1.0 if right else 0.0, 1.0 if low else 0.0))
        self.label.setPos(p.x(), p.y())
        self.line.setVisible(True)
        self.label.setVisible(True)

    def hide(self) -> None:
        self.line.setVisible(False)
        self.label.setVisible(False)


class GraphsPanel(QWidget):
    """The three graphs and the window selector."""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.window_s = 60
        self.window_box = QComboBox()
        for name, secs in WINDOWS:
            self.window_box.addItem(name, secs)
        self.window_box.currentIndexChanged.connect(self._window_changed)
        self.summary = QLabel()
        # a growing text must not widen the dock (that relayouts the whole window)
        self.summary.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.summary.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        self.summary.setTextFormat(Qt.TextFormat.RichText)
        top = QHBoxLayout()
        top.addWidget(QLabel("Window:"))
        top.addWidget(self.window_box)
        top.addWidget(self.summary, 1)

        self.rps = _make_plot("Requests / s by status", "req/s", "time", date_axis=True)
        self.rps.getPlotItem().addLegend(offset=(6, 4), horSpacing=8, colCount=5)
        self.stack_curves: list[pg.PlotDataItem] = []
        for name, _idx, color in reversed(STACK):
            c = QColor(color)
            curve = self.rps.plot([], [], pen=pg.mkPen(c, width=1), fillLevel=0,
                                  brush=pg.mkBrush(_tint(c)), name=name)
            self.stack_curves.insert(0, curve)

        self.lat = _make_plot("Latency percentiles", "", "time", date_axis=True,
                              log_axis="left")
        self.lat.getPlotItem().setLogMode(y=True)
        self.lat.getPlotItem().addLegend(offset=(6, 4), colCount=3)
        self.pct_curves = [
            self.lat.plot([], [], pen=pg.mkPen(color, width=2), name=name, connect="finite")
            for name, color in PCT_COLORS
        ]

        self.hist = _make_plot("Latency histogram", "requests", "duration (log scale)",
                               date_axis=False, log_axis="bottom")
        self.hist.getPlotItem().setLogMode(x=True)
        self.hist.getPlotItem().setClipToView(False)  # clipping breaks stepMode="center"
        self.hist_curve = self.hist.plot([], [], stepMode="center", fillLevel=0,
                                         pen=pg.mkPen("#2f7fc1"),
                                         brush=pg.mkBrush(_tint(QColor("#2f7fc1"))))
        self._series: Series | None = None
        self._latest: float | None = None
        self.hovers = [
            HoverReadout(self.rps, self._describe_rps),
            HoverReadout(self.lat, self._describe_lat),
            HoverReadout(self.hist, self._describe_hist),
        ]
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 4, 4, 4)
        lay.addLayout(top)
        lay.addWidget(self.rps, 3)
        lay.addWidget(self.lat, 3)
        lay.addWidget(self.hist, 2)
        self.apply_palette()

    def apply_palette(self) -> None:
        for plot in (self.rps, self.lat, self.hist):
            style_plot(plot, self.palette())

    def _window_changed(self, _i: int) -> None:
        self.window_s = int(self.window_box.currentData())

    def set_window(self, seconds: int) -> None:
        i = self.window_box.findData(seconds)
        if i >= 0:
            self.window_box.setCurrentIndex(i)

    def refresh(self, agg: Aggregator) -> None:
        """Redraw everything from the aggregator."""
        if agg.latest is None:
            for c in (*self.stack_curves, *self.pct_curves):
                c.setData([], [])
            self.hist_curve.setData([0.1, 1.0], [0])
            self.summary.setText("no requests yet")
            self._series = None
            return
        # complete seconds only (live: up to the clock's last full second, so no false dip
        # while one fills, and the graphs keep moving when requests stop)
        s = agg.series(self.window_s)
        self._series = s
        self._latest = float(s.end)
        x = s.t + self._latest
        x0, x1 = time_span(agg.first, float(x[-1]), self.window_s)
        for plot in (self.rps, self.lat):
            plot.getPlotItem().setXRange(x0, x1, padding=0)
        cum = np.zeros(len(x))
        for (_name, idx, _color), curve in zip(STACK, self.stack_curves, strict=True):
            cum = cum + s.counts[:, list(idx)].sum(axis=1)
            curve.setData(x, cum.copy())
        # Ranges are set here, not auto-ranged at paint time (that costs a second paint).
        self.rps.getPlotItem().setYRange(0, max(1.0, float(cum.max())) * 1.08, padding=0)
        for i, curve in enumerate(self.pct_curves):
            y = s.pct[:, i]
            curve.setData(x, np.where(np.isfinite(y), y, np.nan))
        finite = s.pct[np.isfinite(s.pct)]
        if len(finite):
            lo_ms, hi_ms = float(finite.min()), float(finite.max())
            self.lat.getPlotItem().setYRange(np.log10(lo_ms) - 0.15, np.log10(hi_ms) + 0.15,
                                             padding=0)
        nz = np.nonzero(s.hist)[0]
        if len(nz):
            lo, hi = max(0, nz[0] - 2), min(len(s.hist), nz[-1] + 3)
            counts = s.hist[lo:hi].astype(float)
            self.hist_curve.setData(BIN_EDGES_MS[lo : hi + 1], counts)
            hp = self.hist.getPlotItem()
            hp.setXRange(np.log10(BIN_EDGES_MS[lo]), np.log10(BIN_EDGES_MS[hi]), padding=0.02)
            hp.setYRange(0, max(1.0, float(counts.max())) * 1.08, padding=0)
        total = int(s.counts.sum())
        rate = agg.rate()
        last = agg.recent_percentiles()
        self.summary.setText(
            f"<b>{rate:,.0f}</b> req/s · p50 <b>{fmt_ms(last[0])}</b> · "
            f"p95 <b>{fmt_ms(last[1])}</b> · p99 <b>{fmt_ms(last[2])}</b>"
        )
        self.summary.setToolTip(f"{total:,} requests in the window; latency of the last "
                                "10 full seconds")

    # -- hover text ------------------------------------------------------------------

    def _index(self, x: float) -> int | None:
        s = self._series
        if s is None or not len(s.t) or self._latest is None:
            return None
        # x is absolute unix time; the series' t is relative to the newest bucket
        i = round(x - (self._latest + s.t[0]))
        return i if 0 <= i < len(s.t) else None

    def _describe_rps(self, x: float) -> str | None:
        i = self._index(x)
        if i is None or self._series is None:
            return None
        row = self._series.counts[i]
        parts = [f"{name}  {int(row[list(idx)].sum())}" for name, idx, _c in reversed(STACK)]
        return f"{int(row.sum())} req/s\n" + "\n".join(parts)

    def _describe_lat(self, x: float) -> str | None:
        i = self._index(x)
        if i is None or self._series is None:
            return None
        p = self._series.pct[i]
        return f"p50 {fmt_ms(p[0])}\np95 {fmt_ms(p[1])}\np99 {fmt_ms(p[2])}"

    def _describe_hist(self, x: float) -> str | None:
        if self._series is None:
            return None
        ms = 10 ** x  # log x axis: view coordinates are log10(ms)
        i = int(np.searchsorted(BIN_EDGES_MS, ms) - 1)
        if not 0 <= i < len(self._series.hist):
            return None
        n = int(self._series.hist[i])
        return f"{fmt_ms(BIN_EDGES_MS[i])} {DASH} {fmt_ms(BIN_EDGES_MS[i + 1])}\n{n:,} requests"

