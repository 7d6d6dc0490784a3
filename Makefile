# Conveniences over scripts/: the README's two commands are `bash scripts/demo.sh` and `bash scripts/test.sh`.
.PHONY: setup demo test test-fast bench
setup:
	bash scripts/setup.sh
demo:
	bash scripts/demo.sh
test:
	bash scripts/test.sh
test-fast:
	bash scripts/test.sh -m "not slow" -x -q
bench: setup
	.venv/bin/python benchmarks/relation_terms.py
