"""Summarise py-spy's collapsed stacks (``--format raw``): the functions holding the most
samples, by self time and by total time, and the share of idle samples.

    python scripts/profile_summary.py PROFILE.txt [--top 25]
"""

from __future__ import annotations

import argparse
from collections import Counter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    with open(args.profile) as fh:
        for line in fh:
            stack, _, count = line.rstrip().rpartition(" ")
            if not stack:
                continue
            n = int(count)
            samples += n
            frames = [f.split(" (")[0] + " (" + f.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
                      for f in stack.split(";") if f]
            own[frames[-1]] += n
            for frame in set(frames):
                total[frame] += n
    print(f"{samples} samples")
    for title, counter in (("self", own), ("total", total)):
        print(f"-- by {title} time")
        for frame, n in counter.most_common(args.top):
            print(f"{100 * n / samples:5.1f}%  {frame}")


if __name__ == "__main__":
    main()
