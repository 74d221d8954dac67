"""Re-measure the course's facts dataset (lesson 03) and compare with the shipped numbers.

Every candidate in ``course_utils/data/facts.json`` (known or not) is run through the model with the
course prompt convention; p(answer), the answer's rank and the subject's token positions are
recomputed. A fact is *known* when its answer ranks first.

    python scripts/verify_facts.py                  # check the shipped numbers (exit 1 on mismatch)
    python scripts/verify_facts.py --write          # re-measure and rewrite the shipped file
    python scripts/verify_facts.py --model gpt2 --output facts_gpt2.json  # another model
    python scripts/verify_facts.py --candidates c.json --write  # start from a new candidate list

A candidates file is a JSON list of ``{"id", "subject", "relation", "answer"}`` with ``relation`` a
template holding one ``{}`` for the subject, e.g. ``"{} is located in the city of"``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from course_utils.facts import DATA_FILE, FACT_KEYS, measure_fact

P_TOLERANCE = (
    2e-3  # absolute: the numbers are rounded to 4 decimals; BLAS differs slightly across CPUs
)
CRITERION = "known: the answer is the model's top-1 next token (rank 1)"


def measure_all(model, candidates: list[dict]) -> list[dict]:
    measured = []
    for candidate in candidates:
        try:
            result = measure_fact(
                model, candidate["subject"], candidate["relation"], candidate["answer"]
            )
        except ValueError as error:  # e.g. the answer is several tokens for this model's tokenizer
            print(f"skipped {candidate['id']}: {error}")
            continue
        row = {key: candidate[key] for key in ("id", "subject", "relation")}
        row.update(prompt=result["prompt"], answer=candidate["answer"])
        row.update({key: result[key] for key in ("p_answer", "rank", "known", "subject_positions")})
        measured.append({key: row[key] for key in FACT_KEYS})
    return measured


def compare(shipped: list[dict], measured: list[dict]) -> list[str]:
    """Differences between shipped and re-measured facts, one line each (empty: they agree)."""
    problems = []
    if [fact["id"] for fact in shipped] != [fact["id"] for fact in measured]:
        problems.append("the measured facts are not the shipped ones (a candidate was skipped)")
    for old, new in zip(shipped, measured, strict=False):  # a skipped candidate is reported above
        if abs(old["p_answer"] - new["p_answer"]) > P_TOLERANCE:
            problems.append(
                f"{old['id']}: p_answer shipped {old['p_answer']:.4f}, "
                f"measured {new['p_answer']:.4f}"
            )
        for key in ("rank", "known", "subject_positions", "prompt"):
            if old[key] != new[key]:
                problems.append(f"{old['id']}: {key} shipped {old[key]!r}, measured {new[key]!r}")
    return problems


def dumps(document: dict) -> str:
    """JSON with one fact per line, so a diff of a re-measurement shows which facts changed."""
    head = {key: value for key, value in document.items() if key != "facts"}
    lines = [json.dumps(head, indent=1, ensure_ascii=False)[:-2] + ',\n "facts": [']
    lines.append(
        ",\n".join("  " + json.dumps(fact, ensure_ascii=False) for fact in document["facts"])
    )
    lines.append(" ]\n}\n")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--model", default=None, help="model name for load_model (default: the embedded model)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--candidates",
        type=Path,
        default=None,
        help="JSON list of candidates (default: every entry of the shipped file)",
    )
    parser.add_argument(
        "--write", action="store_true", help="rewrite the shipped file with the new numbers"
    )
    parser.add_argument("--output", type=Path, default=None, help="write the measured file here")
    args = parser.parse_args(argv)

    from course_utils import load_model
    from course_utils.model import EMBEDDED_MODEL

    shipped = json.loads(DATA_FILE.read_text()) if DATA_FILE.exists() else None
    candidates = json.loads(args.candidates.read_text()) if args.candidates else shipped["facts"]
    model = load_model(args.model, device=args.device)
    measured = measure_all(model, candidates)
    for fact in measured:
        mark = "known  " if fact["known"] else "unknown"
        print(
            f"{mark} rank {fact['rank']:>5}  p={fact['p_answer']:.4f}  "
            f"{fact['prompt']!r} -> {fact['answer']!r}"
        )
    n_known = sum(fact["known"] for fact in measured)
    print(f"{n_known} of {len(measured)} candidates known ({CRITERION})")

    document = {
        "model": args.model or EMBEDDED_MODEL,
        "convention": "model.to_tokens(prompt) prepends the model's BOS (<|endoftext|> for the "
        "embedded model); p_answer is the softmax at the last position",
        "criterion": CRITERION,
        "n_candidates": len(measured),
        "n_known": n_known,
        "facts": measured,
    }
    target = args.output or (DATA_FILE if args.write else None)
    if target is not None:
        target.write_text(dumps(document))
        print(f"wrote {target}")
        return 0
    if args.model is not None or args.candidates is not None:
        return 0  # nothing shipped to compare with
    problems = compare(shipped["facts"], measured)
    for line in problems:
        print("MISMATCH", line)
    print("shipped numbers reproduced" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
