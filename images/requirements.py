"""Print the requirements of pyproject.toml's base and the given extras, one per line, with the
project's own `capstan[...]` references expanded: an image installs its dependencies in a layer
of their own, before the sources, so a source change does not reinstall torch."""

import sys
import tomllib


def requirements(pyproject: str, extras: list[str]) -> list[str]:
    with open(pyproject, "rb") as f:
        project = tomllib.load(f)["project"]
    optional, out, seen = project["optional-dependencies"], list(project["dependencies"]), set()
    todo = list(extras)
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in optional[extra]:
            if req.startswith("capstan["):
                todo += req[len("capstan[") : -1].split(",")
            else:
                out.append(req.split("#")[0].strip())
    return out


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1], sys.argv[2:])))
