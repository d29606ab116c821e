"""``python -m decoding.demo`` (what ``make demo`` runs): JSON that validates, from a 135M model.

Loads the embedded SmolLM2-135M-Instruct, generates a record for a 7-property JSON Schema (an enum,
an integer range, strings with maxLength, a boolean, an array with maxItems, an optional property),
prints it, validates it with ``jsonschema`` and prints the stats. About a minute on two cores.
"""

from __future__ import annotations

import json
import sys
import time

__all__ = ["PROMPT", "SCHEMA", "main"]

SCHEMA: dict = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 40},
        "age": {"type": "integer", "minimum": 18, "maximum": 99},
        "role": {"enum": ["engineer", "designer", "manager", "scientist"]},
        "remote": {"type": "boolean"},
        "skills": {
            "type": "array",
            "items": {"type": "string", "maxLength": 20},
            "maxItems": 3,
        },
        "email": {"type": "string", "maxLength": 40},
        "city": {"type": "string", "maxLength": 30},
    },
    "required": ["name", "age", "role", "remote", "skills", "city"],
    "additionalProperties": False,
}

PROMPT = (
    "Write a JSON employee record for Ada Lovelace, a 36 year old scientist in London who works "
    "remotely and knows mathematics and poetry."
)


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import jsonschema

    from decoding import Generator, load_model

    t0 = time.perf_counter()
    print("loading the embedded SmolLM2-135M-Instruct ...", flush=True)
    model = load_model()
    print(f"loaded in {time.perf_counter() - t0:.1f} s", flush=True)
    print(f"schema: {json.dumps(SCHEMA)}")
    print(f"prompt: {PROMPT}\n", flush=True)
    gen = Generator(model, schema=SCHEMA, max_tokens=120)
    comp = gen.generate(PROMPT)
    print(comp.text)
    if comp.finish_reason != "stop":
        print(f"\nfinish_reason: {comp.finish_reason} (cut by max_tokens)")
        return 1
    try:
        jsonschema.validate(comp.value, SCHEMA)
        valid = True
    except jsonschema.ValidationError as exc:
        print(f"validation error: {exc.message}")
        valid = False
    print(f"\nvalid: {valid}")
    print(comp.stats.summary())
    return 0 if valid else 1


if __name__ == "__main__":
    sys.exit(main())
