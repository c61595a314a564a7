"""Run the lifecycle command line and report its peak memory as the last stderr line.

python bench/peak.py check FILE   ->   ... stderr ends with "peak_rss_kb=123456"
"""

from __future__ import annotations

import resource
import sys

from lifecycle.cli import main

if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"peak_rss_kb={peak}", file=sys.stderr)
    sys.exit(code)
