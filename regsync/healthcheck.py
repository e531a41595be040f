"""The container image's HEALTHCHECK: `python -m regsync.healthcheck`.

Probes /healthz of the `serve` listening on $REGSYNC_LISTEN (the address `serve` reads when no
--listen is given; a wildcard address is probed on loopback). Exit 0 when it answers 200, else 1
with one line on stderr. Standard library only, so a probe costs one short interpreter start.
"""

from __future__ import annotations

import os
import sys
import urllib.request

from regsync.server import DEFAULT_LISTEN, LISTEN_ENV, parse_listen

WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def health_url(listen: str) -> str:
    """The /healthz URL a probe inside the container uses for a daemon on ``listen``."""
    host, port = parse_listen(listen)
    host = WILDCARDS.get(host, host)
    return f"http://[{host}]:{port}/healthz" if ":" in host else f"http://{host}:{port}/healthz"


def main(timeout: float = 4.0) -> int:
    try:
        url = health_url(os.environ.get(LISTEN_ENV) or DEFAULT_LISTEN)
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            ok = resp.status == 200
    except (ValueError, OSError) as exc:
        print(f"regsync healthcheck: {exc}", file=sys.stderr)
        return 1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
