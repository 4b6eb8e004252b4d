"""Every FastAGI / process AGI benchmark, one after the other, with their default bounds (~3-4 min).

    python tests/benchmarks/run_all.py

Each prints its own table and ratios. Figures from a shared or busy machine are pessimistic: each
table shows the load average before and after its run.
"""

from __future__ import annotations

import time

import bench_invocation
import bench_load
import bench_scale


def main() -> int:
    started = time.monotonic()
    for name, bench in (("per-invocation cost", bench_invocation), ("load", bench_load),
                        ("scaling", bench_scale)):
        print(f"\n=== {name} ({bench.__name__}.py) ===", flush=True)
        bench.main([])
    print(f"\nall benchmarks done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
