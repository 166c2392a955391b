# pixel2gauss: `make test` and `make demo` set everything up on a fresh machine with Python 3.11.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
P2G := $(VENV)/bin/p2g
DEMO ?= demo_out
STAMP := $(VENV)/.installed
PYTEST_FLAGS ?= -q

.PHONY: install lint typecheck test test-slow test-all demo bench clean data

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

# ruff (lint rules and formatting) and mypy over gaussian_field/ and prior_store/, as configured in pyproject.toml;
# run by CI before the tests
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# mypy alone
typecheck: $(STAMP)
	$(VENV)/bin/mypy

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_FLAGS) -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest $(PYTEST_FLAGS) -m slow

test-all: $(STAMP)
	$(PY) -m pytest $(PYTEST_FLAGS)

demo: $(STAMP)
	$(PY) -m workflows.demo_assets --out $(DEMO)
	$(P2G) render $(DEMO)/astronaut_field.npz --scale 2 --scale 3.7 --scale 8 --out $(DEMO)/renders
	$(P2G) fit-prior $(DEMO)/photos --store $(DEMO)/prior.zarr --crop 64 --crops-per-image 2 --preset demo --batch 3 --workers 2
	$(P2G) prior-stats --store $(DEMO)/prior.zarr --out $(DEMO)/prior_stats
	$(P2G) info $(DEMO)/prior.zarr
	rm -rf $(DEMO)/train && $(P2G) train --prior $(DEMO)/prior.zarr --out $(DEMO)/train --device cpu \
		--images $(addprefix $(DEMO)/photos/,astronaut.png coffee.png rocket.png hubble_deep_field.png immunohistochemistry.png) \
		--val-images $(DEMO)/photos/chelsea.png --steps 150 --batch 4 --patch 24 --scales 2-8 --lr 2e-3 --val-every 50
	$(P2G) upscale $(DEMO)/astronaut_lr.png $(DEMO)/photos/chelsea.png --checkpoint $(DEMO)/train/best.pt \
		--out $(DEMO)/upscaled --scale 2 --scale 3.7 --scale 8
	$(P2G) eval --checkpoint $(DEMO)/train/best.pt --images $(DEMO)/photos/chelsea.png --scales 2,3,4,8 --out $(DEMO)/eval
	# the bundled lite weights (no --checkpoint): the model a new user gets without training
	$(P2G) upscale $(DEMO)/astronaut_lr.png $(DEMO)/photos/chelsea.png --out $(DEMO)/upscaled_bundled \
		--scale 2 --scale 3.7 --scale 8
	$(P2G) eval --images $(DEMO)/photos/chelsea.png --scales 2,3,4,8 --out $(DEMO)/eval_bundled

# A larger local corpus: photographs from Debian wallpaper packages (network: apt-get download) -> data/wallpapers
# ({train,val}/: the val split is held out, e.g. for the bundled model's scores in sr_model/weights/MODEL_CARD.md)
data: $(STAMP)
	$(PY) -m workflows.make_corpus --out data

bench: $(STAMP)
	$(PY) benchmarks/render_reference.py
	$(PY) benchmarks/render_speed.py
	$(PY) benchmarks/prior_stats_memory.py
	$(PY) benchmarks/fit_throughput.py

clean:
	rm -rf $(DEMO) .pytest_cache build *.egg-info
