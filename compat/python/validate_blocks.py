"""Validates Block Kit JSON with Slack's own Python SDK (slack_sdk's Block Kit models).

Reads one JSON document from stdin, either a message `{"blocks": [...]}` or a modal
`{"view": {...}}`. Prints `ok` and exits 0 when slack_sdk accepts it; prints what failed (which
block, which rule) and exits 1 when not.

    compat/python/.venv/bin/python compat/python/validate_blocks.py < message.json

slack_sdk is lenient in ways that would hide mistakes, so this does more than call
`validate_json()`:
- `validate_json()` checks only the object it is called on; `to_dict()` checks the nested
  elements and text objects too (a button's value, a select's options, ...), so both run.
- A block or element of a type the SDK does not know parses to None (or is dropped), and a
  misspelt view field is ignored; so the SDK's `to_dict()` is compared with the input, and
  anything it dropped or changed is reported as not understood.
"""

import json
import sys

from slack_sdk.models.blocks import Block
from slack_sdk.models.views import View

# Slack's limit on the blocks of one message (a modal's 100 is checked by View itself).
MAX_MESSAGE_BLOCKS = 50


def main() -> int:
    try:
        document = json.load(sys.stdin)
    except ValueError as error:
        return report([f"stdin is not JSON: {error}"])
    if not isinstance(document, dict):
        return report(['expected a JSON object: {"blocks": [...]} or {"view": {...}}'])
    if "blocks" in document:
        problems = message_problems(document["blocks"])
    elif "view" in document:
        problems = view_problems(document["view"])
    else:
        problems = ['expected a "blocks" or a "view" key']
    return report(problems)


def report(problems: list) -> int:
    """Prints `ok` or the problems; the exit code."""
    if not problems:
        print("ok")
        return 0
    for problem in problems:
        print(problem)
    return 1


def message_problems(blocks) -> list:
    """What is wrong with a message's blocks."""
    if not isinstance(blocks, list):
        return ["blocks: expected a JSON array"]
    problems = []
    if len(blocks) > MAX_MESSAGE_BLOCKS:
        problems.append(f"blocks: {len(blocks)} blocks, a message may have at most {MAX_MESSAGE_BLOCKS}")
    return problems + blocks_problems(blocks, "blocks")


def blocks_problems(blocks: list, where: str) -> list:
    """What is wrong with each block of a list."""
    problems = []
    for index, block in enumerate(blocks):
        problems += block_problems(block, f"{where}[{index}]")
    return problems


def block_problems(block, where: str) -> list:
    """What is wrong with one block: parsing, the SDK's validators, and what the SDK dropped."""
    if not isinstance(block, dict):
        return [f"{where}: expected a JSON object, got {json.dumps(block)}"]
    kind = block.get("type")
    try:
        parsed = Block.parse(block)
        if parsed is None:
            return [f"{where}: unknown block type {json.dumps(kind)}"]
        parsed.validate_json()
        # to_dict() validates every nested element and text object, not just the block.
        as_sdk_sees_it = parsed.to_dict()
    except Exception as error:  # SlackObjectFormationError, or TypeError for a missing field
        return [f"{where} ({kind}): {type(error).__name__}: {error}"]
    return [f"{where} ({kind}): {problem}" for problem in differences(block, as_sdk_sees_it, "")]


def view_problems(view) -> list:
    """What is wrong with a modal (or Home tab) view."""
    if not isinstance(view, dict):
        return ["view: expected a JSON object"]
    blocks = view.get("blocks")
    if not isinstance(blocks, list):
        return ["view.blocks: expected a JSON array"]
    problems = blocks_problems(blocks, "view.blocks")
    if problems:
        return problems
    try:
        as_sdk_sees_it = View(**view).to_dict()
    except Exception as error:
        return [f"view: {type(error).__name__}: {error}"]
    return [f"view: {problem}" for problem in differences(view, as_sdk_sees_it, "")]


def differences(sent, understood, path: str) -> list:
    """Where the SDK's idea of an object differs from what was sent: a key it dropped, an item
    it could not parse, a value it changed. Empty values (which to_dict() leaves out) and
    extra keys the SDK adds are not differences."""
    label = path or "(top)"
    if isinstance(sent, dict):
        if not isinstance(understood, dict):
            return [f"{label}: not understood by slack_sdk (became {json.dumps(understood)})"]
        problems = []
        for key, value in sent.items():
            child = f"{path}.{key}" if path else key
            if key not in understood:
                if not is_empty(value):
                    problems.append(f"{child}: not understood by slack_sdk (dropped)")
                continue
            problems += differences(value, understood[key], child)
        return problems
    if isinstance(sent, list):
        if not isinstance(understood, list) or len(understood) != len(sent):
            return [f"{label}: not understood by slack_sdk (became {json.dumps(understood)})"]
        problems = []
        for index, (item, seen) in enumerate(zip(sent, understood)):
            child = f"{path}[{index}]"
            if seen is None and item is not None:
                kind = item.get("type") if isinstance(item, dict) else None
                problems.append(f"{child}: not understood by slack_sdk (unknown type {json.dumps(kind)})")
                continue
            problems += differences(item, seen, child)
        return problems
    if sent != understood:
        return [f"{label}: slack_sdk read {json.dumps(sent)} as {json.dumps(understood)}"]
    return []


def is_empty(value) -> bool:
    """Whether to_dict() would leave this value out anyway."""
    return value is None or (hasattr(value, "__len__") and len(value) == 0)


if __name__ == "__main__":
    sys.exit(main())
