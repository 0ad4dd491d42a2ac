# Two commands do all the set-up (both idempotent, using a project-local .venv):
#   make app    open the desktop app on the bundled demo
#   make test   install everything and run the whole test suite
.PHONY: app test venv bench clean

venv:
	@bash scripts/setup_venv.sh

app: venv
	.venv/bin/quantviz

test: venv
	QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -p no:cacheprovider

bench: venv
	.venv/bin/python benchmarks/engine.py

clean:
	rm -rf .venv build *.egg-info
