"""`trm compare`: the arguments into a plan (every config checked before anything trains), then the runs
(`trm.compare`), the table and the plot (`trm.compare_report`). (The module is not called `compare`: the
package exports the command function under that name.)"""

from __future__ import annotations

import argparse
from functools import partial


def compare(args: argparse.Namespace) -> int:
    from trm import compare as cmp
    from trm import compare_report as report

    specs = cmp.parse_runs(args.run or [])
    budget = cmp.budget_overrides(args.max_steps, args.max_time, args.eval_interval)
    planned = cmp.plan(specs, args.set, args.seeds, budget, args.out)
    say = partial(print, flush=True)  # progress lines show up between the runs, even through a pipe
    results = cmp.run_all(planned, progress=not args.no_progress, say=say)
    result = report.write_report(specs, planned, results, args.set, args.seeds, args.out)
    print(result.table, end="")
    print(f"table written to {args.out / 'compare.md'} (and compare.csv, compare_runs.csv)")
    print(f"plot written to {report.plot_comparison(result)}")
    return 0
