"""Make asv's HTML dashboard work offline: ``python benchmarks/asv_offline.py [.asv/html]``.

``asv publish`` writes an ``index.html`` that loads jQuery, Flot, Bootstrap,
stupidtable and blueimp-md5 from CDNs; without a network (or in a sandboxed
browser) the page stays empty. This copies local copies of those libraries into
``HTML/vendor/`` and points the page at them. The copies come from Debian's
packages (``--from``, default ``/usr/share/javascript``):

    apt-get install -y libjs-jquery libjs-jquery-flot libjs-bootstrap libjs-jquery-stupidtable node-blueimp-md5

Debian ships Flot 4 with its plugins (time, selection, categories) in
``jquery.flot.min.js``, where asv's page asks for Flot 0.8.3 in separate files:
the separate plugin tags are dropped. ``jquery.flot.orderBars.js`` (bar charts
side by side) has no Debian package; a no-op stand-in is written, so bars of one
benchmark's parameters overlap instead of standing side by side.

Exit status: 0 rewritten; 2 the folder or a library is missing (one line says which).
Run it after every ``asv publish`` (which rewrites index.html).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

# CDN file name in asv's index.html -> (file under --from, Debian package); None: dropped
# (contained in another file) or stubbed.
LIBRARIES = {
    "jquery-3.3.1.min.js": ("jquery/jquery.min.js", "libjs-jquery"),
    "jquery.flot.min.js": ("jquery-flot/jquery.flot.min.js", "libjs-jquery-flot"),
    "jquery.flot.time.min.js": None,
    "jquery.flot.selection.min.js": None,
    "jquery.flot.categories.min.js": None,
    "jquery.flot.orderBars.js": None,
    "stupidtable.min.js": ("jquery-stupidtable/stupidtable.min.js", "libjs-jquery-stupidtable"),
    "md5.min.js": ("blueimp-md5/md5.min.js", "node-blueimp-md5"),
    "bootstrap.min.js": ("bootstrap/js/bootstrap.min.js", "libjs-bootstrap"),
    "bootstrap.min.css": ("bootstrap/css/bootstrap.min.css", "libjs-bootstrap"),
}
REMOTE = re.compile(r'<(script|link)\b[^>]*?(?:src|href)="(https://[^"]+)"[^>]*>(?:</script>)?')
VENDOR = "vendor"


def fail(what: str, where: str, todo: str) -> None:
    print(f"asv_offline.py: error: {what}, {where} ({todo})", file=sys.stderr)
    raise SystemExit(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", default=".asv/html", help="asv's html_dir (default: .asv/html)")
    parser.add_argument("--from", dest="source", default="/usr/share/javascript",
                        help="folder holding the libraries (Debian's /usr/share/javascript)")
    args = parser.parse_args(argv)
    html, source = Path(args.html), Path(args.source)
    index = html / "index.html"
    if not index.is_file():
        fail("no index.html", str(html), "run asv publish first")
    page = index.read_text(encoding="utf-8")
    for name, entry in LIBRARIES.items():  # check everything before writing anything
        if entry and not (source / entry[0]).is_file():
            fail(f"{entry[0]} is missing", str(source), f"apt-get install -y {entry[1]}")
    vendor = html / VENDOR
    vendor.mkdir(exist_ok=True)

    def local(match: re.Match) -> str:
        tag, url = match.group(1), match.group(2)
        name = url.rsplit("/", 1)[-1]
        if name not in LIBRARIES:
            fail(f"index.html loads {url}, which this script does not know", str(index),
                 "add it to LIBRARIES in benchmarks/asv_offline.py")
        entry = LIBRARIES[name]
        if entry is None:
            if name == "jquery.flot.orderBars.js":
                (vendor / name).write_text("/* no-op stand-in: see benchmarks/asv_offline.py */\n")
                return f'<script src="{VENDOR}/{name}"></script>'
            return f"<!-- {name}: included in {VENDOR}/jquery.flot.min.js -->"
        shutil.copyfile(source / entry[0], vendor / name)
        if tag == "link":
            return f'<link rel="stylesheet" href="{VENDOR}/{name}">'
        return f'<script src="{VENDOR}/{name}"></script>'

    index.write_text(REMOTE.sub(local, page), encoding="utf-8")
    left = REMOTE.findall(index.read_text(encoding="utf-8"))
    if left:
        fail(f"{len(left)} remote file(s) left", str(index), "add them to LIBRARIES")
    print(f"{index}: every script and style sheet now loads from {vendor}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
