# The README's two commands. Both set up .venv first (idempotent).
PY := .venv/bin/python
DEMO_CFG := configs/demo_shapes_vits14_linear.py
DEMO_DIR := work_dirs/demo

.PHONY: env timm-env demo test lint gpu-check

env:
	bash tools/setup_env.sh

# timm (needs torchvision) as an independent reference for the tests.
timm-env:
	bash tools/setup_timm_env.sh

# Main job on the built-in data: generate the shapes dataset, train a linear
# head (progress bar; the full log goes to the work dir), plot its curves,
# evaluate it (mIoU table, charts) and paint the predictions.
demo: env
	$(PY) tools/make_shapes_dataset.py data/shapes
	$(PY) tools/train.py $(DEMO_CFG) --work-dir $(DEMO_DIR)
	$(PY) tools/plot_curves.py $(DEMO_DIR) --out $(DEMO_DIR)/plots/curves.png
	$(PY) tools/test.py $(DEMO_CFG) $(DEMO_DIR)/iter_150.pth \
		--work-dir $(DEMO_DIR) --show-dir vis --plot-dir $(DEMO_DIR)/plots
	@echo
	@echo "Pictures: $(DEMO_DIR)/vis/vis_data/vis_image/ (each image: ground truth | prediction)"
	@echo "Plots:    $(DEMO_DIR)/plots/ (per_class_iou, confusion_matrix, class_distribution, curves)"
	@echo "Full log: $(DEMO_DIR)/<timestamp>/<timestamp>.log (or add --verbose to the tools)"
	@echo "Try next:"
	@echo "  segment your images: $(PY) tools/inference.py IMAGES... --config $(DEMO_CFG) --checkpoint $(DEMO_DIR)/iter_150.pth --out-dir $(DEMO_DIR)/predictions"
	@echo "  export to ONNX:      $(PY) tools/export_onnx.py $(DEMO_CFG) $(DEMO_DIR)/iter_150.pth --out $(DEMO_DIR)/model.onnx"
	@echo "  real weights:        put dinov2_vits14_pretrain.pth in checkpoints/ (README: Meta's released files)"

# One pytest worker per core (2 on CI), a test file per worker at a time so
# that module fixtures are built once; tests/conftest.py gives each worker
# one torch thread. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= $(shell nproc)
test: env timm-env
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadfile

# isort, yapf and flake8 with setup.cfg's settings (`tools/lint.sh --fix`
# rewrites files instead of reporting).
lint: env
	bash tools/lint.sh

# On a lent GPU machine (CUDA torch, no network), with .whl/ made here by
# tools/gpu_wheels.sh: installs the wheels, builds mmcv, runs the gpu tests
# and the pending GPU benchmark rows within a 9-minute budget
# (docs/benchmarks.md). GPU_CHECK_ARGS: e.g. --out DIR, --mmcv-cuda.
gpu-check:
	bash tools/gpu_check.sh $(GPU_CHECK_ARGS)
