# Two commands on a fresh machine: `make demo` and `make test`. Everything they need is installed
# into .venv from the project's own files.
PY ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat setup.cfg pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: venv demo test test-discord-oldest typecheck torture bench clean

$(VPY):
	$(PY) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip

$(STAMP): $(VPY) setup.cfg pyproject.toml
	$(VPY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(VPY) -m bot demo

typecheck: venv
	$(VPY) -m mypy

test: venv typecheck
	@sh .ci/ensure-pgbouncer
	$(VPY) -m pytest -m "not slow" $(PYTEST_ARGS)

# The Discord tests again on the oldest discord.py supported (setup.cfg: >=2.3), in a venv of its own.
DPY_OLDEST := 2.3.2
DISCORD_TESTS := tests/test_bot_commandlog.py tests/test_bot_outbox_failure.py tests/test_bot_shutdown.py tests/test_interaction_kinds.py
test-discord-oldest:
	test -x .venv-dpy-oldest/bin/python || $(PY) -m venv .venv-dpy-oldest
	.venv-dpy-oldest/bin/python -m pip install --quiet -e '.[test]' 'discord.py==$(DPY_OLDEST)'
	.venv-dpy-oldest/bin/python -m pytest -m "not slow" -p no:cacheprovider $(DISCORD_TESTS) $(PYTEST_ARGS)

torture: venv
	$(VPY) -m pytest tests/torture -m "slow or not slow" $(PYTEST_ARGS)

bench: venv
	$(VPY) -m pip install --quiet -e '.[test,bench,fast]'
	$(VPY) -m bench

clean:
	rm -rf $(VENV) .venv-dpy-oldest build *.egg-info .mypy_cache .pytest_cache
