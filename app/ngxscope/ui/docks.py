"""The main window's side panels in their docks (Graphs, Workers, Upstreams, Routes,
Slowest, TLS / Connections, Events): built, tabbed, fed and refreshed. `MainWindow` is one;
what it must provide is declared here (`agg`, `paused`, `events`, `_show_slow`), the rest
comes from `WindowBase`."""

from __future__ import annotations

from PySide6.QtCore import QEvent, Qt
from PySide6.QtWidgets import QDockWidget

from ngxscope.model import Exchange, LifecycleEvent
from ngxscope.store.aggregate import Aggregator

from .baselinemenu import refresh_verdicts
from .graphs import GraphsPanel, style_plot
from .panels import EVENT_KINDS, EventsLog, WorkersPanel, describe_event
from .routes import RoutesPanel
from .slowest import SlowestPanel
from .tlspanel import TlsPanel
from .upstreams import UpstreamsPanel
from .windowbase import WindowBase

__all__ = ["DockedPanels"]


class DockedPanels(WindowBase):
    """A main window with the side panels docked around its table."""

    agg: Aggregator
    paused: bool
    events: list[LifecycleEvent]
    workers: WorkersPanel
    upstreams: UpstreamsPanel
    routes: RoutesPanel
    slowest: SlowestPanel
    events_log: EventsLog
    tls_panel: TlsPanel

    def _show_slow(self, ex: Exchange) -> None:
        """An outlier was clicked in the Slowest panel."""
        raise NotImplementedError

    def _build_docks(self) -> None:
        """The panels, each in its dock; the bottom ones tabbed, Workers in front."""
        self.graphs = GraphsPanel()
        self.workers = WorkersPanel()
        self.upstreams = UpstreamsPanel()
        self.upstreams.peer_clicked.connect(lambda addr: self.filter_bar.set_text(
            f"upstream={addr}"))
        self.routes = RoutesPanel()
        self.routes.route_clicked.connect(self.filter_bar.set_text)
        self.slowest = SlowestPanel(self.routes.templater)
        self.slowest.exchange_clicked.connect(self._show_slow)
        self.events_log = EventsLog()
        self.tls_panel = TlsPanel()
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.docks = {}
        for name, title, widget, area in (
            ("graphs", "Graphs", self.graphs, Qt.DockWidgetArea.RightDockWidgetArea),
            ("workers", "Workers", self.workers, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("upstreams", "Upstreams", self.upstreams, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("routes", "Routes", self.routes, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("slowest", "Slowest", self.slowest, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("events", "Events", self.events_log, Qt.DockWidgetArea.BottomDockWidgetArea),
            ("tls", "TLS / Connections", self.tls_panel, Qt.DockWidgetArea.BottomDockWidgetArea),
        ):
            dock = QDockWidget(title, self)
            dock.setObjectName(f"dock-{name}")
            dock.setWidget(widget)
            self.addDockWidget(area, dock)
            self.docks[name] = dock
        self.tabifyDockWidget(self.docks["workers"], self.docks["upstreams"])
        self.tabifyDockWidget(self.docks["upstreams"], self.docks["routes"])
        self.tabifyDockWidget(self.docks["routes"], self.docks["slowest"])
        self.tabifyDockWidget(self.docks["slowest"], self.docks["tls"])
        self.tabifyDockWidget(self.docks["tls"], self.docks["events"])
        self.docks["workers"].raise_()
        self.resizeDocks([self.docks["graphs"]], [440], Qt.Orientation.Horizontal)
        self.resizeDocks([self.docks["workers"]], [210], Qt.Orientation.Vertical)

    def show_events(self, events: list[LifecycleEvent]) -> None:
        """Log lifecycle events in the Events dock and flash the newest in the status bar."""
        self.events.extend(events)
        self.events_log.add_events(events)
        for ev in events:
            if ev.kind == "lost-events":
                self.status.lost_total += 1
        shown = [ev for ev in events if ev.kind != "config"] or events
        last = shown[-1]
        more = f"  (+{len(shown) - 1} more: see Events)" if len(shown) > 1 else ""
        self.status.flash(describe_event(last) + more, EVENT_KINDS.get(last.kind, ("", "#6b7280"))[1])
        self.docks["events"].setWindowTitle(f"Events ({self.events_log.topLevelItemCount():,})")

    def refresh_graphs(self) -> None:
        if self.paused or not self.docks["graphs"].isVisible():
            return
        self.graphs.refresh(self.agg)

    def refresh_docks(self) -> None:
        """Recompute the panels that are shown."""
        if self.docks["workers"].isVisible():
            self.workers.refresh(self.agg, self.graphs.window_s)
        if self.docks["upstreams"].isVisible():
            self.upstreams.refresh(self.agg)
        refresh_verdicts(self)
        # a dock behind another's tab is "visible" to Qt: these two cost, ask what is shown
        if not self.docks["routes"].visibleRegion().isEmpty():
            self.routes.refresh(self.store, self.agg.end_second() + 1.0)
        if not self.docks["slowest"].visibleRegion().isEmpty():
            self.slowest.refresh(self.store, self.agg.end_second() + 1.0)
        if self.docks["tls"].isVisible():
            self.tls_panel.refresh(self.agg)

    def changeEvent(self, event: QEvent) -> None:
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            graphs = getattr(self, "graphs", None)
            if graphs is not None:
                graphs.apply_palette()
                style_plot(self.workers.plot, self.palette())
        super().changeEvent(event)
