"""Files ngxscope ships besides code: the application icon (ngxscope.svg, also the window's
icon), the desktop entry, and the systemd unit of the long-running recorder with its
configuration. Read with importlib.resources (`files("ngxscope.resources")`)."""
