"""The ngxscope window (PySide6 + pyqtgraph): the only package that imports Qt.

`launch` starts it (on a capture helper, remote helpers or a saved session; `ngxscope.gui`
calls it once a display is known to be there); `app` owns the QApplication and the event
loop; `mainwindow.MainWindow` is the window, fed by an `ExchangeSource` from
`ngxscope.pipeline` that it polls on a UI timer; the rest are its parts (table, detail,
graphs, panels, dialogs, menus). Importing this package does not import Qt.
"""
