"""The ngxscope window (PySide6 + pyqtgraph): the only package that imports Qt.

Entry points: `ngxscope.ui.app.run_window` and `ngxscope.ui.app.no_display_reason`;
sources in `ngxscope.ui.source` (`StreamSource`) and `ngxscope.ui.synthetic`
(`SyntheticSource`); the window is `ngxscope.ui.mainwindow.MainWindow`. Importing this
package does not import Qt.
"""
