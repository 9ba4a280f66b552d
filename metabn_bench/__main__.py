"""`python -m metabn_bench` is the same as the `metabn-bench` command."""

from metabn_bench.cli import main

if __name__ == "__main__":
    main()
