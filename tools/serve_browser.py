"""Serve the cell browser (results/browser/) on this machine: open the printed address.

    .venv/bin/python tools/serve_browser.py [results/browser] [--port 8000]

A static HTTP server that answers byte-range requests (the Cell Browser reads each gene's
values as a byte range of its matrix); any other such server (nginx, Apache) serves the
folder as well. Nothing is fetched from the internet.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "workflow" / "scripts"))
from cartcohort.browser import DATASET, serve_site


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", nargs="?", default="results/browser")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    server = serve_site(args.site, host=args.host, port=args.port)
    host, port = server.server_address[:2]
    print(f"Cell browser of {args.site}: http://{host}:{port}/?ds={DATASET} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
