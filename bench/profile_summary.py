"""Where the sampled time went, from py-spy's ``--format raw`` output
(collapsed stacks: ``frame;frame;... count``): the share of samples per
process (thread name included with ``--threads``), and the functions
holding the most samples inclusively, trainpipe's own and overall.

    python bench/profile_summary.py PROFILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

FRAME = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def parse(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    file = match["file"]
    for marker in ("site-packages/", "trainpipe_operator/", "trainpipe_trainer/", "lib/python3.11/"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    return f"{match['func']} ({file})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("profile", type=Path)
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    stacks = parse(args.profile)
    total = sum(c for _, c in stacks) or 1
    by_root: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    ours: Counter[str] = Counter()
    for frames, count in stacks:
        by_root[frames[0]] += count
        seen = set()
        for frame in frames:
            name = short(frame)
            if name in seen:
                continue
            seen.add(name)
            inclusive[name] += count
            if "trainpipe_operator/" in frame or "trainpipe_trainer/" in frame:
                ours[name] += count
    print(f"{total} samples")
    print("\nby process/thread (first frame):")
    for root, count in by_root.most_common(10):
        print(f"  {100 * count / total:5.1f}%  {root}")
    print("\ntrainpipe's functions, inclusive:")
    for name, count in ours.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {name}")
    print("\nall functions, inclusive:")
    for name, count in inclusive.most_common(args.top):
        print(f"  {100 * count / total:5.1f}%  {name}")


if __name__ == "__main__":
    main()
