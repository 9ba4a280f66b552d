"""Range and name checks of configurations: every number and name a command will use, checked
before any work (or any file) is done, each failure one UserError naming the value and what is
valid.

Apart from config.py (the ground floor, which every wing imports), because checking a name
needs the registries of the wings (methods, architectures, corruptions, protocols).
"""

from __future__ import annotations

import math

from metabn_bench.config import CorruptConfig, EvalConfig, SuiteConfig, TrainConfig
from metabn_bench.errors import UserError


def check_int(name: str, value: int, low: int, meaning: str = "") -> None:
    """UserError unless `value` >= `low` (`meaning` says what the lowest value means)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        valid = f"an integer >= {low}" + (f" ({meaning})" if meaning else "")
        raise UserError(f"{name} is {value!r}; valid: {valid}")


def check_float(name: str, value: float, low: float, inclusive: bool = True) -> None:
    """UserError unless `value` is finite and >= `low` (or > `low` when not inclusive)."""
    ok = math.isfinite(value) and (value >= low if inclusive else value > low)
    if not ok:
        bound = f">= {low:g}" if inclusive else f"> {low:g}"
        raise UserError(f"{name} is {value!r}; valid: a finite number {bound}")


def check_train_config(cfg: TrainConfig, where: str = "") -> None:
    """Every range and name of a TrainConfig (method, arch, epochs, data, optimiser)."""
    from metabn_bench.methods import METHODS
    from metabn_bench.models import ARCHS

    p = f"{where}." if where else ""
    METHODS.get(cfg.method)
    ARCHS.get(cfg.arch)
    check_int(f"{p}epochs", cfg.epochs, 1)
    check_int(f"{p}seed", cfg.seed, 0)
    d, o = cfg.data, cfg.optim
    check_int(f"{p}data.train_size", d.train_size, 0, "0 = all images")
    check_int(f"{p}data.crop_padding", d.crop_padding, 0, "0 = no crop")
    if len(d.mean) != 3 or len(d.std) != 3:
        raise UserError(f"{p}data.mean and {p}data.std are {list(d.mean)} and {list(d.std)}; "
                        "valid: three numbers each (one per RGB channel)")
    for i in range(3):
        check_float(f"{p}data.mean[{i}]", d.mean[i], -math.inf)
        check_float(f"{p}data.std[{i}]", d.std[i], 0.0, inclusive=False)
    check_float(f"{p}optim.lr", o.lr, 0.0, inclusive=False)
    check_float(f"{p}optim.lr_min", o.lr_min, 0.0)
    check_float(f"{p}optim.momentum", o.momentum, 0.0)
    check_float(f"{p}optim.weight_decay", o.weight_decay, 0.0)
    check_int(f"{p}optim.batch_size", o.batch_size, 1)
    check_float(f"{p}optim.warmup_epochs", o.warmup_epochs, 0.0)
    if o.warmup_epochs >= cfg.epochs:
        raise UserError(f"{p}optim.warmup_epochs is {o.warmup_epochs:g}; valid: 0 <= "
                        f"warmup_epochs < epochs ({cfg.epochs})")


def check_corrupt_config(cfg: CorruptConfig, where: str = "") -> None:
    """Every range and name of a CorruptConfig (preset, corruptions, severities, sizes)."""
    from metabn_bench.corruptions import names as cnames
    from metabn_bench.corruptions import registry, tables

    p = f"{where}." if where else ""
    if cfg.preset != "auto" and cfg.preset not in tables.TABLES:
        raise UserError(f"{p}preset (the corruption parameter table) is '{cfg.preset}'; "
                        f"valid: auto, {', '.join(tables.TABLES)}")
    for name in cfg.corruptions:
        registry.get(name)
    bad = [s for s in cfg.severities if s not in cnames.SEVERITIES]
    if bad or not cfg.severities:
        raise UserError(f"invalid {p}severities {list(cfg.severities)}; valid: 1, 2, 3, 4, 5")
    check_int(f"{p}seed", cfg.seed, 0)
    check_int(f"{p}n_test (--n)", cfg.n_test, 0, "0 = all images")
    check_int(f"{p}batch_size", cfg.batch_size, 1)
    backends = ("torch", "imagecorruptions")
    if cfg.backend not in backends:
        raise UserError(f"unknown backend '{cfg.backend}'; valid: {', '.join(backends)}")
    if cfg.benchmark not in cnames.BENCHMARKS:
        raise UserError(f"unknown benchmark '{cfg.benchmark}'; valid: "
                        f"{', '.join(cnames.BENCHMARKS)}")
    if cfg.benchmark == "c-bar":
        if cfg.backend != "torch":
            raise UserError("--benchmark c-bar needs --backend torch (the imagecorruptions "
                            "package has no -C-bar corruptions)")
        if cfg.extras:
            raise UserError("--extras adds the 4 extra -C corruptions; -C-bar has none "
                            "(drop --extras or use --benchmark c)")
        if cfg.preset != "auto":
            tables.cbar_table(cfg.preset)
    wrong = [c for c in cfg.corruptions if cnames.benchmark_of(c) != cfg.benchmark]
    if wrong:
        raise UserError(f"{', '.join(wrong)} not in benchmark '{cfg.benchmark}'; valid: "
                        f"{', '.join(_benchmark_names(cfg.benchmark))}")


def _benchmark_names(benchmark: str) -> tuple[str, ...]:
    from metabn_bench.corruptions import names as cnames

    return cnames.ALL if benchmark == "c" else cnames.CBAR


def check_eval_config(cfg: EvalConfig, where: str = "") -> None:
    """The protocols (names and options) and the test batch size of an EvalConfig."""
    from metabn_bench.evaluation.protocols import parse_protocol

    p = f"{where}." if where else ""
    if not cfg.protocols:
        raise UserError(f"{p}protocols is empty; valid: one or more of none, bn, tent")
    for spec in cfg.protocols:
        parse_protocol(spec)
    check_int(f"{p}batch_size", cfg.batch_size, 0, "0 = the protocol's default")


def check_suite_config(cfg: SuiteConfig) -> None:
    """A whole suite before any work: methods, seeds, every job's training config, the
    corrupted set's config and the evaluation protocols."""
    from metabn_bench.methods import METHODS

    if not cfg.methods:
        raise UserError("methods is empty; valid: one or more of " + ", ".join(METHODS.names()))
    if not cfg.seeds:
        raise UserError("seeds is empty; a suite needs at least one seed (e.g. seeds: [0])")
    for name in cfg.methods:
        METHODS.get(name)
    # A per-method entry for a registered method that `methods` does not list is unused, not
    # wrong: narrowing a preset with `--set methods=[...]` leaves its other entries behind.
    # A name that is no method at all is a typo.
    for key, names in (("method_hparams", cfg.method_hparams), ("method_seeds", cfg.method_seeds)):
        for name in names:
            if name not in METHODS.names():
                raise UserError(f"{key} names '{name}', which is not a method; valid: "
                                f"{', '.join(METHODS.names())}")
    for seed in cfg.seeds:
        check_int("seeds", seed, 0)
    for name, seeds in cfg.method_seeds.items():
        if not seeds or len(set(seeds)) != len(seeds):
            raise UserError(f"method_seeds.{name} is {list(seeds)}; valid: one or more "
                            "distinct seeds (e.g. [0, 1, 2])")
        for seed in seeds:
            check_int(f"method_seeds.{name}", seed, 0)
    check_train_config(cfg.train, "train")
    check_corrupt_config(cfg.corrupt, "corrupt")
    check_eval_config(cfg.eval, "eval")
