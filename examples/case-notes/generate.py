"""Generate the case-note example (seeded, reproducible, no downloads).

Task: rewrite a customer's message as the one-sentence case note of the team's house style:

    "Customer reports <problem> with the <product> and asks for <request>."
    (+ " They need it by <deadline>." when the message names one)

Each problem and request has several paraphrases in the messages (casual, formal, angry,
rambling) and exactly one canonical wording in the note, so the model has to recognise the
situation and restate it the house way; the product and deadline are copied from the message.
Answers are free text, so the evaluation scores them with ROUGE-L (and chrF).

Usage: python generate.py [--n 700] [--seed 17] [--out data/train.jsonl]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from tunesmith.utils.io import write_jsonl

INSTRUCTION = "Write the one-sentence case note for this customer message, in the house style."

PROBLEMS = {  # canonical wording -> paraphrases seen in messages
    "a defect": ["it's broken", "it stopped working", "it doesn't turn on anymore", "something inside rattles and it won't start",
                 "it is faulty"],
    "a late delivery": ["it still hasn't arrived", "the delivery is way overdue", "I've been waiting for weeks for it to show up",
                        "the parcel never came on the promised day"],
    "a wrong charge": ["you billed me the wrong amount", "the price I paid is higher than advertised",
                       "there's an extra charge on my statement", "I was overcharged"],
    "missing parts": ["some pieces were not in the box", "half the screws are missing", "the box came without the charger",
                      "a part is missing from the package"],
    "damage in transit": ["it arrived smashed", "the box was crushed and the thing inside is dented",
                          "it came with a big crack", "it was damaged when it got here"],
    "a login problem": ["I can't sign in to the app that comes with it", "the companion app won't let me log in",
                        "my password for the product account is rejected", "I'm locked out of the device's account"],
}
REQUESTS = {
    "a refund": ["I want my money back", "please refund me", "I'd like a full refund", "give me a refund"],
    "a replacement": ["send me a new one", "I need a replacement", "please swap it for a working unit",
                      "ship me another one"],
    "a callback": ["call me back please", "can someone phone me", "I'd like a call from a manager",
                   "please ring me to sort this out"],
    "a repair": ["can you fix it", "I want it repaired", "please arrange a repair", "get it repaired under warranty"],
    "an explanation": ["I want to know what happened", "explain how this could happen", "tell me why this happened",
                       "I need an explanation"],
}
PRODUCTS = ["espresso machine", "robot vacuum", "electric scooter", "standing desk", "smart thermostat", "air fryer",
            "noise-cancelling headphones", "washing machine", "road bike", "gaming laptop", "baby monitor",
            "garden pressure washer", "sewing machine", "office chair"]
DEADLINES = ["Friday", "the end of the month", "next Monday", "the 15th", "tomorrow", "Christmas", "the weekend"]
OPENERS = ["Hi,", "Hello,", "To whom it may concern,", "Hey,", "Good evening,", "Dear team,", ""]
TONES = ["", "", "Honestly I'm really disappointed.", "This is unacceptable.", "I've been a loyal customer for years.",
         "Not happy at all.", "Sorry to bother you."]
SIGNOFFS = ["Thanks", "Regards", "Cheers", "Best", "Waiting for your answer", ""]
TEMPLATES = [
    "I bought your {product} and {problem}. {request}.",
    "My {product}: {problem}. {request}, please.",
    "About the {product} I ordered - {problem}. {request}.",
    "{problem_cap} with the {product} I got from you. {request}.",
    "So, the {product}... {problem}. {request}.",
]


def make_message(rng: random.Random) -> dict:
    problem = rng.choice(list(PROBLEMS))
    request = rng.choice(list(REQUESTS))
    product = rng.choice(PRODUCTS)
    said_problem = rng.choice(PROBLEMS[problem])
    said_request = rng.choice(REQUESTS[request])
    body = rng.choice(TEMPLATES).format(product=product, problem=said_problem, problem_cap=said_problem[0].upper()
                                        + said_problem[1:], request=said_request[0].upper() + said_request[1:])
    deadline = rng.choice(DEADLINES) if rng.random() < 0.35 else None
    extra = [rng.choice(TONES)]
    if deadline:
        extra.insert(rng.randrange(2), rng.choice(["I need this sorted by {d}.", "It has to be done before {d}.",
                                                    "Please make sure it's settled by {d}."]).format(d=deadline))
    text = " ".join(p for p in [body, *extra] if p)
    message = "\n\n".join(p for p in [rng.choice(OPENERS), text, rng.choice(SIGNOFFS)] if p)
    note = f"Customer reports {problem} with the {product} and asks for {request}."
    if deadline:
        note += f" They need it by {deadline}."
    return {"instruction": INSTRUCTION, "input": message, "output": note}


def generate(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    return [make_message(rng) for _ in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=700)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / "train.jsonl"))
    args = ap.parse_args()
    rows = generate(args.n, args.seed)
    out = Path(args.out)
    write_jsonl(out, rows)  # atomic: a half-written file never replaces a complete one
    print(f"wrote {len(rows)} messages to {out}")


if __name__ == "__main__":
    main()
