"""Front-end speed: parse + check + graph for the examples and for generated models
of 100, 1,000 and 10,000 nodes (median of repeats).

    python benchmarks/frontend.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import glob
import statistics
import time

from himdsl.driver import read_source, run_frontend


def generated_model(nodes: int) -> str:
    """A valid model with `nodes` nodes: globals, noise, and a web of lets in a plate."""
    lines = ["model generated", "const D = 4", "data x : real[D]", "latent beta ~ Normal(0, 1) [D]",
             "plate n over x {", "    noise e0 ~ Normal(0, 1) [D]"]
    for k in range(1, nodes - 4):
        a, b = f"h{k - 1}" if k > 1 else "e0", f"h{k // 2}" if k > 2 else "beta"
        lines.append(f"    let h{k} = tanh({a} * 0.5 + {b}) + sin({a})")
    lines.append(f"    observe x = h{nodes - 5} + e0")
    lines.append("}")
    return "\n".join(lines) + "\n"


def median_seconds(source: str, path: str, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run_frontend(source, path)
        times.append(time.perf_counter() - start)
        assert result.ok, result.rendered()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    run_frontend(read_source("examples/hier_gauss/model.him"), "warm-up")  # builds the parser once
    print("| model | nodes | parse + check + graph (ms) |")
    print("| --- | ---: | ---: |")
    for path in sorted(glob.glob("examples/*/model.him")):
        source = read_source(path)
        nodes = run_frontend(source, path).graph.number_of_nodes()
        print(f"| {path.split('/')[1]} | {nodes} | {median_seconds(source, path, args.repeats) * 1000:.1f} |")
    for size in (100, 1_000, 10_000):
        source = generated_model(size)
        nodes = run_frontend(source, "generated").graph.number_of_nodes()
        repeats = args.repeats if size < 10_000 else max(1, args.repeats // 2)
        print(f"| generated | {nodes:,} | {median_seconds(source, 'generated', repeats) * 1000:.1f} |")


if __name__ == "__main__":
    main()
