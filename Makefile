# Two commands on a fresh machine:  `make demo` (main job)  and  `make test` (test suite).
# Both create .venv when missing and (re)install when pyproject.toml changes.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# The CPU build of torch; an unpinned torch would pull a multi-GB CUDA build.
TORCH  := torch==2.13.0

.PHONY: setup demo bridge-demo test lint system-deps docs docs-images check-models bench experts vla-eval vla-validate vla-shared vla-separate nav-stop-sweep checkpoints world-model wm-eval clean lerobot-check

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The tiny Qwen VLA shipped in qrobot/checkpoints/qwen-vla (held-out seeds), behind the
# supervisor, each episode recorded to Rerun.
demo: setup
	$(BIN)/qrobot run pointnav --policy qwen-vla --episodes 5 --seed 10000

# The same VLA driving a simulated robot in another process through the bridge: robot
# process, agent, operator (dead-man held) and policy, four processes (docs/bridge.md).
bridge-demo: setup
	$(BIN)/python -m qrobot.bridge.demo --scenario pointnav --episodes 3 --seed 10000

# Lint, format, types, then the suite. The headless Rerun viewer in the snapshot tests
# renders with Mesa's lavapipe (Vulkan on the CPU), the console tests drive Debian's
# chromium (Playwright with executable_path, no browser download): installed here when missing.
test: setup system-deps lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup -q

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

system-deps:
	@ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || \
		{ apt-get install -y -q mesa-vulkan-drivers >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && apt-get install -y -q mesa-vulkan-drivers >/dev/null; }; }
	@test -x /usr/bin/chromium || \
		{ apt-get install -y -q chromium >/dev/null 2>&1 || \
		  { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; }

# The docs site (mkdocs-material) into site/, failing on any warning (broken link, orphan page).
docs: setup
	$(BIN)/python -m mkdocs build --strict --site-dir site

# The pictures of recordings in the docs: expert episodes opened in the real viewer, headless.
docs-images: setup system-deps
	$(BIN)/python scripts/screenshot.py --out docs/images
	QROBOT_DOCS_IMAGES=docs/images $(BIN)/python -m pytest -q tests/bridge/test_console.py -k shows

# lerobot 0.4.4 itself against qrobot's LeRobot adapter, in its own venv .venv-lerobot
# (lerobot pins torch < 2.11 and rerun-sdk < 0.27: it cannot share .venv; docs/robots/lerobot.md)
lerobot-check:
	bash scripts/lerobot_check.sh

# The long checks of the shipped models (CI runs smaller versions of them).
check-models: setup
	$(BIN)/python -m pytest -n 2 -q -m models

# The scripted-expert table in docs/experts.md (50 seeded episodes per scenario).
experts: setup
	$(BIN)/qrobot bench --policies expert,random --episodes 50 --no-record --out runs/experts

# The VLA tables in README.md and docs/vla.md: the shipped qwen-vla checkpoint on every task,
# 50 episodes each, seen and held-out phrasings on the same seeds. `vla-validate` is the
# validation split (seeds 10,000+: every choice between variants); `vla-eval` the test split
# (seeds 40,000+), run once per shipped checkpoint and never used to decide anything.
VLA_TASKS := reach pick_place pick_place_clutter stack pointnav objectnav
VLA_CKPT := qrobot/checkpoints/qwen-vla
vla-validate: setup
	set -e; for t in $(VLA_TASKS); do for p in seen held-out; do \
		$(BIN)/qrobot eval $$t --split validation --episodes 50 --phrasing $$p --workers 2 --checkpoint $(VLA_CKPT); \
	done; done
# (held-out phrasings: success and whether the named cube moved, without the swap re-runs,
# which double a tabletop run; the swap test runs with the seen phrasings)
vla-eval: setup
	set -e; for t in $(VLA_TASKS); do \
		$(BIN)/qrobot eval $$t --split test --episodes 50 --workers 2 --checkpoint $(VLA_CKPT); \
		$(BIN)/qrobot eval $$t --split test --episodes 50 --workers 2 --checkpoint $(VLA_CKPT) \
			--phrasing held-out --no-swap; \
	done

# How the shipped checkpoint qrobot/checkpoints/qwen-vla is made: the six tasks' datasets,
# each a stage (a file target: an interrupted build goes on with the stages not done, an
# interrupted collection with its missing episodes, an interrupted training from its last
# snapshot with the minutes already spent). Two recipes at equal compute (docs/vla.md):
# `vla-shared`, one backbone for both embodiments on 2 threads; `vla-separate`, one model
# per embodiment, each on 1 thread, the two at once. Each trains at most VLA_MINUTES; its
# final model (not the checkpoint-N snapshots) is what ships. Training seeds 0-9,999 only
# (qrobot/splits.py). A dataset target is done once its meta.json exists: to grow a dataset
# collected with fewer episodes, run its command (it records only the missing ones).
VLA_DATA := data/vla
VLA_MINUTES ?= 120
# ObjectNav's stop rule (m, rad, steps running), chosen with `qrobot eval objectnav --split
# validation --nav-stop XY,TH,K` and stored in the shipped checkpoint
NAV_STOP ?= 0.06,0.15,1
# The candidates `make nav-stop-sweep` compares on 40 validation seeds (30000-30039) of the
# bundled checkpoint; the best goes to NAV_STOP (then `make checkpoints` again)
NAV_STOP_CANDIDATES ?= 0.06,0.15,1 0.06,0.15,3 0.04,0.10,3 0.08,0.20,3 0.06,0.15,6
VLA_ARM_SETS := reach pick_place pick_place_dart pick_place_clutter stack
VLA_BASE_SETS := pointnav objectnav
VLA_TRAIN = $(BIN)/qrobot train --minutes $(VLA_MINUTES) --steps 1000000 --batch 16 --layers 3 --resume
$(VLA_DATA)/reach/meta.json:
	$(BIN)/qrobot collect reach --episodes 150 --workers 2 --out $(@D)
$(VLA_DATA)/pick_place/meta.json:
	$(BIN)/qrobot collect pick_place --episodes 400 --workers 2 --out $(@D)
$(VLA_DATA)/pick_place_dart/meta.json:
	$(BIN)/qrobot collect pick_place --episodes 80 --seed 500 --action-noise 0.5 --workers 2 --out $(@D)
$(VLA_DATA)/pick_place_clutter/meta.json:
	$(BIN)/qrobot collect pick_place_clutter --episodes 250 --workers 2 --out $(@D)
$(VLA_DATA)/stack/meta.json:
	$(BIN)/qrobot collect stack --episodes 300 --workers 2 --out $(@D)
$(VLA_DATA)/pointnav/meta.json:
	$(BIN)/qrobot collect pointnav --episodes 800 --workers 2 --out $(@D)
$(VLA_DATA)/objectnav/meta.json:
	$(BIN)/qrobot collect objectnav --episodes 500 --workers 2 --out $(@D)
VLA_ARM_DATA := $(foreach s,$(VLA_ARM_SETS),$(VLA_DATA)/$(s))
VLA_BASE_DATA := $(foreach s,$(VLA_BASE_SETS),$(VLA_DATA)/$(s))
$(VLA_DATA)/ckpt/embodiments.json: $(addsuffix /meta.json,$(VLA_ARM_DATA) $(VLA_BASE_DATA))
	$(VLA_TRAIN) --dataset $(VLA_ARM_DATA) $(VLA_BASE_DATA) --out $(@D) --threads 2
$(VLA_DATA)/ckpt-panda/vla_config.json: $(addsuffix /meta.json,$(VLA_ARM_DATA))
	$(VLA_TRAIN) --dataset $(VLA_ARM_DATA) --out $(@D) --threads 1
$(VLA_DATA)/ckpt-diffbot/vla_config.json: $(addsuffix /meta.json,$(VLA_BASE_DATA))
	$(VLA_TRAIN) --dataset $(VLA_BASE_DATA) --out $(@D) --threads 1
vla-shared: setup $(VLA_DATA)/ckpt/embodiments.json
vla-separate: setup $(addsuffix /meta.json,$(VLA_ARM_DATA) $(VLA_BASE_DATA))
	$(MAKE) -j2 $(VLA_DATA)/ckpt-panda/vla_config.json $(VLA_DATA)/ckpt-diffbot/vla_config.json
nav-stop-sweep: setup
	for c in $(NAV_STOP_CANDIDATES); do echo "--nav-stop $$c"; \
		$(BIN)/qrobot eval objectnav --split validation --seed 30000 --episodes 40 --workers 2 --no-card \
			--nav-stop $$c --checkpoint $(VLA_CKPT) -q || echo "failed: --nav-stop $$c"; \
	done
checkpoints: vla-separate
	rm -rf $(VLA_CKPT)
	$(BIN)/python -m qrobot.vla.multi $(VLA_CKPT) $(VLA_DATA)/ckpt-panda $(VLA_DATA)/ckpt-diffbot --nav-stop $(NAV_STOP)

# How the shipped world model (qrobot/checkpoints/world_model) was made: 1,200 episodes
# (expert, noisy-expert, wander in turn) and 150 held-out ones, then 45 min on one thread.
world-model: setup
	$(BIN)/qrobot wm-collect pointnav_clutter --episodes 1200 --out data/wm_train
	$(BIN)/qrobot wm-collect pointnav_clutter --episodes 150 --seed 10000 --out data/wm_held
	$(BIN)/qrobot wm-train --dataset data/wm_train --out data/ckpt_wm --minutes 45 --threads 1

# The world-model figures in docs/world_model.md: held-out prediction quality, then foresight vs reactive rules.
wm-eval: setup
	test -d data/wm_held || $(BIN)/qrobot wm-collect pointnav_clutter --episodes 150 --seed 10000 --out data/wm_held
	$(BIN)/qrobot wm-eval --checkpoint qrobot/checkpoints/world_model --dataset data/wm_held
	$(BIN)/python benchmarks/foresight.py --checkpoint qrobot/checkpoints/world_model --episodes 50 --seed 10000

bench: setup
	$(BIN)/python benchmarks/env_speed.py
	$(BIN)/python benchmarks/supervisor_latency.py
	$(BIN)/python benchmarks/stopping.py
	$(BIN)/python benchmarks/record_speed.py
	$(BIN)/python benchmarks/limit_conformance.py
	$(BIN)/python benchmarks/ssm_ablation.py
	$(BIN)/python benchmarks/vla_speed.py --checkpoint qrobot/checkpoints/qwen-vla
	$(BIN)/python benchmarks/wm_speed.py --checkpoint qrobot/checkpoints/world_model

clean:
	rm -rf $(VENV) runs .pytest_cache
