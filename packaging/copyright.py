"""/usr/share/doc/ngxscope/copyright: ngxscope's license, then every vendored distribution's.

    python packaging/copyright.py SITE_PACKAGES_DIR > copyright

The licenses come from each distribution's own metadata (License-Expression, License, or
its "License ::" classifiers); their full texts ship inside the venv with the distributions
(*.dist-info/licenses or LICENSE* files), whose paths are listed.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import sys

__all__ = ["main"]

MIT = """Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify, merge,
publish, distribute, sublicense, and/or sell copies of the Software, and to permit persons
to whom the Software is furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all copies or
substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A PARTICULAR
PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT HOLDERS BE LIABLE
FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR
OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER
DEALINGS IN THE SOFTWARE."""


def _license(dist: md.Distribution) -> str:
    meta = dist.metadata
    expr = meta["License-Expression"]
    if expr:
        return expr
    text = (meta["License"] or "").strip()
    if text and len(text) < 80 and "\n" not in text:
        return text
    classifiers = [c.split("::")[-1].strip() for c in meta.get_all("Classifier") or []
                   if c.startswith("License ::")]
    return ", ".join(classifiers) or "see the license files"


def main(argv: list[str] | None = None) -> int:
    site = (argv or sys.argv[1:])[0]
    lines = ["ngxscope", "", "Copyright (c) the ngxscope developers", "License: MIT", "", MIT, "",
             "Vendored in /usr/lib/ngxscope (a private Python venv), each under its own license;",
             "the full texts are in each distribution's .dist-info directory there.", ""]
    dists = sorted(md.distributions(path=[site]), key=lambda d: d.metadata["Name"].lower())
    for dist in dists:
        name = dist.metadata["Name"]
        if name.lower() == "ngxscope":
            continue
        files = [str(f) for f in dist.files or [] if "licen" in str(f).lower() or "copying" in str(f).lower()]
        where = f" ({', '.join(os.path.join('site-packages', f) for f in files[:2])})" if files else ""
        lines.append(f"  {name} {dist.version}: {_license(dist)}{where}")
    lines += ["", "On Debian systems the complete texts of the GNU Lesser General Public License",
              "version 3 (PySide6, shiboken6, Qt), the GNU General Public License versions 2 and 3",
              "and the Apache License 2.0 are in /usr/share/common-licenses/LGPL-3,",
              "/usr/share/common-licenses/GPL-2, /usr/share/common-licenses/GPL-3 and",
              "/usr/share/common-licenses/Apache-2.0."]
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
