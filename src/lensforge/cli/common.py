"""What the command-line handlers share."""
from __future__ import annotations


def print_run(run, headline: str) -> None:
    """The two lines every `TASK train` ends with: the key figures, then where the run folder is."""
    r = run.results
    print(f"{headline} train_seconds={r['train_seconds']:.1f} device={r['device']} precision={r['precision']}")
    print(f"run folder: {run.dir}  (report: {run.dir / 'report.html'})")


def print_outputs(records) -> int:
    """`input<TAB>output<TAB>seconds` per image written, then the apply verbs' exit rule."""
    from ..tasks.apply import finish_records

    for r in records:
        if r.ok:
            print(f"{r.file}\t{r.values['out']}\t{r.values['seconds']:.3f}s")
    return finish_records(records)
