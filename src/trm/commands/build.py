"""`trm data`: building data sets (Sudoku, mazes, ARC) in the official layout."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np

from trm.errors import ConfigError


def _labelled_list(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """A plain puzzle list, each labelled by trm's exact solver; a bad line names its line number."""
    from trm.progress import progress
    from trm.tasks import sudoku

    pairs = []
    for i, text in enumerate(progress(sudoku.read_puzzle_list(path), desc=f"solving {path.name}", unit="puzzle")):
        try:
            puzzle = sudoku.parse_puzzle(text)
            pairs.append((puzzle, sudoku.solution_of(puzzle)))
        except sudoku.SudokuError as err:
            raise sudoku.SudokuError(f"{path}: puzzle {i + 1}: {err}") from None
    return pairs


def _sudoku_source(args: argparse.Namespace, rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    from trm.tasks import sudoku

    if args.csv or args.hf:
        path = args.csv or sudoku.download_sudoku_extreme("train")
        rows = sudoku.read_csv(path, min_rating=args.min_rating or None, subsample=args.subsample, rng=rng)
        return [(p, s) for p, s, _ in rows]
    if args.puzzles:
        pairs = _labelled_list(args.puzzles)
    else:
        from trm.progress import progress

        with progress(total=args.generate, desc=f"generating {args.size}x{args.size}", unit="puzzle") as bar:
            made = sudoku.generate_distinct(
                args.generate, args.size, rng, min_rating=args.min_rating, progress=bar.update, givens=args.givens
            )
        pairs = [(p, s) for p, s, _ in made]
    if args.subsample and args.subsample < len(pairs):
        pairs = [pairs[i] for i in rng.choice(len(pairs), args.subsample, replace=False)]
    return pairs


def data(args: argparse.Namespace) -> int:
    if args.task == "maze":
        return _data_maze(args)
    if args.task == "arc":
        return _data_arc(args)
    from trm.tasks import sudoku

    rng = np.random.default_rng(args.seed)
    train = _sudoku_source(args, rng)
    if args.test_csv:
        test = [(p, s) for p, s, _ in sudoku.read_csv(args.test_csv, subsample=args.test_subsample, rng=rng)]
    elif args.test_puzzles:
        test = _labelled_list(args.test_puzzles)
    elif args.hf and args.test_fraction is None:
        test = [
            (p, s)
            for p, s, _ in sudoku.read_csv(
                sudoku.download_sudoku_extreme("test"), subsample=args.test_subsample, rng=rng
            )
        ]
    else:
        fraction = 0.1 if args.test_fraction is None else args.test_fraction
        if not 0 <= fraction < 1:
            raise ConfigError(f"--test-fraction must be in [0, 1), got {fraction}")
        n_test = int(round(len(train) * fraction))
        order = rng.permutation(len(train))
        test = [train[i] for i in order[:n_test]]
        train = [train[i] for i in order[n_test:]]
    if args.test_subsample and args.test_subsample < len(test):
        test = [test[i] for i in rng.choice(len(test), args.test_subsample, replace=False)]
    if not train:
        raise ConfigError("no training puzzles left after filtering")
    summary = sudoku.build_dataset(args.out, train, test, aug=args.aug, seed=args.seed)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _data_maze(args: argparse.Namespace) -> int:
    from trm.progress import progress
    from trm.tasks import maze

    rng = np.random.default_rng(args.seed)

    def made(n: int, what: str) -> list:
        with progress(total=n, desc=f"generating {what} {args.size}x{args.size}", unit="maze") as bar:
            return maze.generate(n, args.size, rng, min_path=args.min_path, progress=bar.update)

    if args.csv or args.hf:
        train = maze.read_csv(args.csv or maze.download_maze_hard("train"), subsample=args.subsample, rng=rng)
    else:
        train = made(args.generate, "train")
    if args.test_csv or (args.hf and not args.test_generate):
        test = maze.read_csv(args.test_csv or maze.download_maze_hard("test"))
    elif args.test_generate:
        test = made(args.test_generate, "test")
    else:
        n_test = max(1, len(train) // 10)
        test, train = train[:n_test], train[n_test:]
    summary = maze.build_dataset(args.out, train, test, aug=args.aug)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _progress(description: str, total: int):
    from trm.progress import progress

    bar = progress(total=total, desc=description, unit="task" if description == "augmenting" else "group")

    def tick(n: int) -> None:
        bar.update(n)
        if bar.n >= bar.total:
            bar.close()

    return tick


def _data_arc(args: argparse.Namespace) -> int:
    import time

    from trm.tasks import arc

    subsets = args.subsets or arc.default_subsets(args.source)
    test_set = args.test_set or next((s for s in ("evaluation2", "evaluation") if s in subsets), "none")
    if test_set == "none":
        test_set = None
    elif test_set not in subsets:
        raise ConfigError(f"--test-set {test_set} is not among the subsets {' '.join(subsets)}")
    start = time.perf_counter()
    tasks = {subset: arc.load_subset(args.source, subset) for subset in subsets}
    if args.tasks:
        missing = set(args.tasks) - {t.name for items in tasks.values() for t in items}
        if missing:
            raise ConfigError(f"--tasks: no task {sorted(missing)[0]!r} in the subsets {' '.join(subsets)}")
        tasks = {s: [t for t in items if t.name in args.tasks] for s, items in tasks.items()}
    summary = arc.build_dataset(
        args.out,
        tasks,
        test_set,
        aug=args.aug,
        seed=args.seed,
        translate=not args.no_translate,
        progress=_progress,
        lazy=args.lazy,
    )
    info = dataclasses.asdict(summary)
    info["seconds"] = round(time.perf_counter() - start, 1)
    info["disk_bytes"] = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    print(json.dumps(info, indent=2))
    return 0
