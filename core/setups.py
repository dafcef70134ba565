"""The table of built-in setups (setups.ini), read by run_all.sh and by the tests: one source.

    names()                                  # the built-in setups, in the file's order
    resolve("synthetic", "quick")            # {"dataset": "tick", "plrs": [...], "seeds": [...], ...}
    resolve("mine", "paper", custom=True)    # a researcher's own setup: the [custom] grids
    python -m core.setups synthetic quick    # the same as shell assignments (run_all.sh evals them)

A setup's section holds its paper preset over [defaults]; a section SETUP.PRESET changes some fields
for another preset; image setups' smoke preset is [image.smoke], then their own; the scan preset is the
paper preset's PLR grid, lengths and first seed, for the adaptive scan (scan.py: what `run_all.sh
--preset scan` runs, into ROOT/SETUP/scan). Field meanings: the comments in setups.ini.
"""
import configparser
import os
import shlex
import sys

from core.errors import UserError

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "setups.ini")
PRESETS = ("quick", "paper", "smoke", "scan")
LISTS = ("model_args", "plrs", "flrs", "seeds", "data_seeds", "paper_boundaries", "stages")
FLAGS = ("pretrain", "finetune", "swa", "evaluate", "geometry")


def _table():
    table = configparser.ConfigParser(interpolation=configparser.ExtendedInterpolation())
    with open(PATH) as f:
        table.read_file(f)
    return table


def names():
    """The built-in setups, in the order of setups.ini."""
    return [s for s in _table().sections() if "." not in s and s not in ("defaults", "grids", "custom")]


def resolve(setup, preset, custom=False):
    """A setup's fields for a preset: lists for LISTS (seeds as ints), flag strings for FLAGS, `smoke`
    a bool, `pretrain_length` an int, `length_flag` ("--iters" where data are drawn per seed, else
    "--epochs"), `custom` whether it is a researcher's own setup."""
    table = _table()
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} for setup {setup}; known: {' '.join(PRESETS)}")
    base = "custom" if custom else setup
    if custom and setup in names():
        raise UserError(f"--setup {setup} is a built-in setup; give your own setup another name")
    if not table.has_section(base):
        raise UserError(f"unknown setup {setup!r}; known: {' '.join(names())}, or any name with --model and "
                        f"--dataset (your own)")
    fields = dict(table["defaults"], **table[base])
    if preset == "smoke" and not fields["data_seeds"].strip():
        fields.update(table["image.smoke"])
    override = f"{base}.{'paper' if preset == 'scan' else preset}"
    if table.has_section(override):
        fields.update(table[override])
    out = {k: v.split() for k, v in fields.items() if k in LISTS}
    out.update({k: fields[k].split() for k in FLAGS})
    out.update(dataset=fields.get("dataset"), model=fields.get("model"), smoke=table.BOOLEAN_STATES[
        fields["smoke"].lower()], pretrain_length=int(fields["pretrain_length"]),
        finetune_length=int(fields["finetune_length"]), custom=custom, setup=setup, preset=preset)
    out["seeds"], out["data_seeds"] = [int(s) for s in out["seeds"]], [int(s) for s in out["data_seeds"]]
    out["length_flag"] = "--iters" if out["data_seeds"] else "--epochs"
    if preset == "scan":  # scan.py sets the lengths; the paper preset's data and kept epochs do not apply
        out.update(seeds=out["seeds"][:1], data_seeds=out["data_seeds"][:1], stages=["scan"], pretrain=[])
    return out


def shell(fields):
    """The fields as bash assignments (upper-case names; lists space-separated), for run_all.sh."""
    lines = []
    for k, v in fields.items():
        if isinstance(v, bool):
            v = "1" if v else "0"
        elif isinstance(v, list):
            v = " ".join(map(str, v))
        lines.append(f"{k.upper()}={shlex.quote('' if v is None else str(v))}")
    return "\n".join(lines)


def main(argv):
    """python -m core.setups SETUP PRESET [custom] | --names: shell assignments for run_all.sh."""
    if argv == ["--names"]:
        print(" ".join(names()))
        return
    print(shell(resolve(argv[0], argv[1], custom=argv[2:] == ["custom"])))


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
