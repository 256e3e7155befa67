"""Write the procedural shapes dataset (ADE20K layout) used by the demo.

python tools/make_shapes_dataset.py data/shapes [--train 80 --val 20]
"""
from dinov2_seg.cli.make_shapes_dataset import main

if __name__ == '__main__':
    main()
