# Two commands set everything up on a fresh machine:
#   make book   builds the static site into _build/html
#   make test   runs every lesson against its stored outputs, plus the unit tests
# Both create (or reuse) the virtual environment .venv and install what they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: book test test-matrix outputs links colab-check pdf clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

book: $(STAMP)
	$(BIN)/jupyter-book build . --warningiserror --keep-going

test: $(STAMP)
	$(BIN)/pytest --nbval

# Every lesson under CPU profiles that switch PyTorch's and NumPy's kernels and thread counts
# (strict nbval), then under bf16 and float16 autocast (every assert must hold); about an hour
# on 2 cores. One profile: make test-matrix PROFILES=threads-1. The list: tests/matrix.py --list.
test-matrix: $(STAMP)
	$(BIN)/python tests/matrix.py --profiles $(or $(PROFILES),all)

# Re-run lessons in fresh kernels on the CPU and store their outputs (NB=path for one).
outputs: $(STAMP)
	for nb in $(or $(NB),notebooks/[0-9][0-9]_*.ipynb); do \
	  ENCODING_WORLD_DEVICE=cpu $(BIN)/jupyter execute --inplace --timeout=900 $$nb || exit 1; \
	done

# Rewrite the Colab cell and README links after changing repository.url in _config.yml.
links: $(STAMP)
	$(BIN)/python -m encoding_world.links

# The whole book as one PDF, _build/latex/encoding-the-world.pdf, through XeLaTeX (about
# 3 minutes). Not part of `make book`: it needs TeX Live and ImageMagick, on Debian/Ubuntu
#   apt-get install texlive-xetex texlive-lang-chinese texlive-latex-extra latexmk \
#                   fonts-freefont-otf imagemagick
pdf: $(STAMP)
	$(BIN)/jupyter-book build . --builder pdflatex

# Rehearse every lesson as a Colab reader runs it: Colab's versions (requirements-colab.txt)
# in a fresh environment, launch cell included; records the table in tests/README.md.
# About 20 minutes on 2 cores and a few GB of downloads (PyPI's torch); not part of `make test`.
colab-check: $(STAMP)
	$(BIN)/python tests/colab_check.py --record

clean:
	rm -rf _build
