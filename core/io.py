"""JSON and JSON-lines files, written atomically (a temporary file, then os.replace), so a reader
never sees half a file; a torn last line of an append-only JSON-lines file is dropped on reading."""
import json
import os


def write_json_atomic(path, obj, indent=1):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=indent)
        f.write("\n")
    os.replace(tmp, path)


def write_jsonl_atomic(path, rows):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_jsonl(path):
    """Rows of a JSON-lines file; a torn last line (a kill during an append) is dropped."""
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except ValueError:
            if i != len(lines) - 1:
                raise
    return rows
