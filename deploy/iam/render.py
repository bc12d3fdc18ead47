#!/usr/bin/env python3
"""Render the IAM policy documents of this folder: replace each ``${Name}`` with your value.

    python deploy/iam/render.py access.json \\
        IdentityCenterInstanceArn=arn:aws:sso:::instance/ssoins-0123456789abcdef IdentityStoreId=d-0123456789

prints the rendered document (JSON) on stdout. Values come as NAME=VALUE arguments, or from the environment
(``--env``: each placeholder from the variable of the same name). A placeholder without a value is an error, never
an empty string; ``IdentityCenterInstanceId`` is taken from ``IdentityCenterInstanceArn`` when not given. Only the
standard library: it runs wherever you build your IAM (Terraform, CloudFormation, a shell). See README.md here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def with_derived(values: Mapping[str, str]) -> dict[str, str]:
    """The values given, plus those derived from them (the instance id from the instance ARN)."""
    derived = dict(values)
    arn = derived.get("IdentityCenterInstanceArn")
    if arn and "IdentityCenterInstanceId" not in derived:
        derived["IdentityCenterInstanceId"] = arn.rsplit("/", 1)[-1]
    return derived


def render(text: str, values: Mapping[str, str]) -> str:
    values = with_derived(values)
    missing = sorted(placeholders(text) - set(values))
    if missing:
        raise KeyError(f"no value for {', '.join(missing)}")
    return PLACEHOLDER.sub(lambda match: values[match.group(1)], text)


def render_document(path: Path, values: Mapping[str, str]) -> dict[str, Any]:
    return json.loads(render(path.read_text(encoding="utf-8"), values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("document", help="a policy document of deploy/iam (a path, or a name such as access.json)")
    parser.add_argument("values", nargs="*", metavar="NAME=VALUE")
    parser.add_argument("--env", action="store_true", help="take the values from the environment")
    args = parser.parse_args(argv)
    path = Path(args.document)
    if not path.exists():
        path = HERE / args.document
    text = path.read_text(encoding="utf-8")
    values: dict[str, str] = {}
    if args.env:
        values.update({name: os.environ[name] for name in placeholders(text) if name in os.environ})
    for item in args.values:
        name, equals, value = item.partition("=")
        if not equals:
            parser.error(f"expected NAME=VALUE, got {item!r}")
        values[name] = value
    try:
        document = json.loads(render(text, values))
    except KeyError as error:
        print(f"{path.name}: {error.args[0]}", file=sys.stderr)
        return 2
    json.dump(document, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
