# The README's two commands. Both set up .venv first (idempotent).
PY := .venv/bin/python
DEMO_CFG := configs/demo_shapes_vits14_linear.py
DEMO_DIR := work_dirs/demo

.PHONY: env timm-env demo test

env:
	bash tools/setup_env.sh

# timm (needs torchvision) as an independent reference for the tests.
timm-env:
	bash tools/setup_timm_env.sh

# Main job on the built-in data: generate the shapes dataset, train a linear
# head, evaluate it (mIoU table) and paint the predictions.
demo: env
	$(PY) tools/make_shapes_dataset.py data/shapes
	$(PY) tools/train.py $(DEMO_CFG) --work-dir $(DEMO_DIR)
	$(PY) tools/test.py $(DEMO_CFG) $(DEMO_DIR)/iter_300.pth \
		--work-dir $(DEMO_DIR) --show-dir vis
	@echo "Visualisations: $(DEMO_DIR)/vis/vis_data/vis_image/"

test: env timm-env
	$(PY) -m pytest tests
