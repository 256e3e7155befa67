"""Write the procedural shapes dataset (ADE20K layout) used by the demo.

python tools/make_shapes_dataset.py data/shapes [--train 80 --val 20]
"""
import argparse

from dinov2_seg.datasets import generate_shapes_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('root', help='output folder, e.g. data/shapes')
    parser.add_argument('--train', type=int, default=80)
    parser.add_argument('--val', type=int, default=20)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    counts = generate_shapes_dataset(
        args.root, args.train, args.val, seed=args.seed)
    print(f'wrote {counts} samples to {args.root}')
