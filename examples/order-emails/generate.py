"""Generate the order-email extraction example (seeded, reproducible, no downloads).

Task: read a customer email and answer with one JSON object of five fields:

    {"customer_name": ..., "order_id": ..., "product": ..., "date": ..., "action": ...}

* customer_name - the sender's full name as signed (or introduced) in the email;
* order_id      - the order number exactly as written (formats vary: "ORD-48213", "#731904", "A-2291-KX");
* product       - the product the email is about, as named in the email;
* date          - the date the email mentions (order, delivery or visit), normalised to YYYY-MM-DD;
* action        - what the customer asks for, one of: refund, replacement, cancel, change_address,
                  track, invoice, exchange_size.

About 12% of the emails leave one field out (no order number, no date, ...): that field is null in
the answer. A model that fills it in anyway has *invented* a value, which the evaluation counts
(evaluate/invented_values.py). Wording, order of sentences, greetings, signatures, date formats and
order-number formats vary, so the task cannot be memorised by template.

Rows are instruction/input/output (Alpaca) records; the output is the JSON text.

Usage: python generate.py [--n 900] [--seed 11] [--out data/train.jsonl]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from pathlib import Path

from tunesmith.utils.io import write_jsonl

INSTRUCTION = (
    "Extract the order details from this customer email as JSON with the keys customer_name, order_id, "
    "product, date (YYYY-MM-DD) and action (refund, replacement, cancel, change_address, track, invoice or "
    "exchange_size). Use null for anything the email does not say."
)
FIELDS = ["customer_name", "order_id", "product", "date", "action"]
MISSING_SHARE = 0.12
OPTIONAL = ["order_id", "date", "product", "customer_name"]  # fields an email may leave out

FIRST = ["Maria", "Tom", "Aisha", "Kenji", "Priya", "Lukas", "Sofia", "Daniel", "Chen", "Olga", "Marco", "Fatima",
         "Jonas", "Elena", "Samuel", "Grace", "Ravi", "Nora", "Ahmed", "Lea", "Bruno", "Ingrid", "Tariq", "Yuki",
         "Carmen", "Piotr", "Amara", "Henrik", "Lucia", "Omar", "Beatriz", "Felix", "Zainab", "Mateo", "Hanna"]
LAST = ["Garcia", "Okafor", "Nakamura", "Schmidt", "Rossi", "Kowalski", "Haddad", "Lindqvist", "Patel", "Moreau",
        "Novak", "Fernandes", "O'Brien", "Van Dijk", "Yilmaz", "Costa", "Andersen", "Ibrahim", "Keller", "Silva",
        "Dubois", "Murphy", "Tanaka", "Berg", "Mendes", "Horvat", "Larsen", "Quinn", "Weber", "Abiodun"]
PRODUCTS = ["AeroPress coffee maker", "Trailblazer hiking boots", "Nimbus 2 rain jacket", "QuietCore headphones",
            "Luma desk lamp", "Orbit standing desk", "Kestrel road bike helmet", "CloudSoft duvet",
            "PixelView 27-inch monitor", "Harbor cast-iron skillet", "Zephyr ceiling fan", "Atlas backpack 30L",
            "Ember electric kettle", "Nova smartwatch", "Granite chef's knife", "Willow linen shirt",
            "Summit yoga mat", "Vortex blender", "Polar insulated bottle", "Sprout kids' bike",
            "Echo bluetooth speaker", "Cedar bookshelf", "Breeze air purifier", "Tundra sleeping bag"]
ACTIONS = {
    "refund": ["I would like a refund for the {product}.", "Please refund me, the {product} is not what I expected.",
               "Can I get my money back for the {product}?", "I'm returning the {product} and want a full refund."],
    "replacement": ["The {product} arrived broken, please send a replacement.",
                    "My {product} stopped working after two days. Could you send me a new one?",
                    "The {product} came with a cracked part; I need a replacement unit."],
    "cancel": ["Please cancel my order for the {product}.", "I changed my mind about the {product}, cancel it please.",
               "Could you cancel the {product} before it ships?"],
    "change_address": ["I moved last week, please ship the {product} to my new address instead.",
                       "Can you change the delivery address for the {product}? I'll be at my office.",
                       "The {product} should go to 14 Mill Lane, not my old flat - please update the address."],
    "track": ["Where is my {product}? The tracking page shows nothing.", "Could you tell me when the {product} will arrive?",
              "The {product} still hasn't shown up, can you check where it is?"],
    "invoice": ["I need an invoice for the {product} for my company's expenses.",
                "Could you send me a VAT invoice for the {product}?", "Please email me the receipt for the {product}."],
    "exchange_size": ["The {product} is too small, can I swap it for a larger size?",
                      "I'd like to exchange the {product} for one size down.",
                      "Wrong size on the {product} - I want to exchange it for a medium."],
}
GREETINGS = ["Hi,", "Hello,", "Hello there,", "Dear customer service,", "Hi team,", "Good afternoon,", "Hey,", ""]
SIGNOFFS = ["Thanks", "Regards", "Best", "Cheers", "Thank you", "Kind regards", "Many thanks", "Best wishes"]
FILLER = ["I have been a customer for years and never had a problem before.", "This is my second email about it.",
          "Sorry for the long message.", "I hope this is the right address for this.", "My phone number is on the account.",
          "", "", ""]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DATE_CONTEXT = ["I placed the order on {d}.", "It was delivered on {d}.", "I ordered it on {d}.",
                "The order went through on {d}.", "It arrived on {d}.", "I bought it on {d}."]
ORDER_CONTEXT = ["My order number is {o}.", "Order {o}.", "(order {o})", "The order ID is {o}.", "Ref: order {o}.",
                 "This is about order {o}."]


def _order_id(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return f"ORD-{rng.randint(10000, 99999)}"
    if kind == 1:
        return f"#{rng.randint(100000, 999999)}"
    if kind == 2:
        return f"{rng.choice('ABCDEFGHKMNPRSTW')}-{rng.randint(1000, 9999)}-{rng.choice('ABCDEFGHKMNPRSTWXYZ')}{rng.choice('ABCDEFGHKMNPRSTWXYZ')}"
    return f"{rng.randint(2023, 2025)}/{rng.randint(1000, 99999):05d}"


def _date(rng: random.Random) -> tuple[str, str]:
    """(as written in the email, YYYY-MM-DD)."""
    d = dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(700))
    month = MONTHS[d.month - 1]
    written = rng.choice([
        f"{month} {d.day}, {d.year}", f"{d.day} {month} {d.year}", d.isoformat(),
        f"{month[:3]} {d.day}, {d.year}", f"{d.day} {month[:3]} {d.year}",
    ])
    return written, d.isoformat()


def make_email(rng: random.Random, missing: str | None) -> dict:
    name = f"{rng.choice(FIRST)} {rng.choice(LAST)}"
    product = rng.choice(PRODUCTS)
    order = _order_id(rng)
    written_date, iso_date = _date(rng)
    action = rng.choice(list(ACTIONS))
    request = rng.choice(ACTIONS[action]).format(
        product=product if missing != "product" else rng.choice(["item", "order", "package", "purchase"]))
    sentences = [request]
    if missing != "order_id":
        sentences.insert(rng.randrange(len(sentences) + 1), rng.choice(ORDER_CONTEXT).format(o=order))
    if missing != "date":
        sentences.insert(rng.randrange(len(sentences) + 1), rng.choice(DATE_CONTEXT).format(d=written_date))
    filler = rng.choice(FILLER)
    if filler:
        sentences.insert(rng.randrange(len(sentences) + 1), filler)
    greeting = rng.choice(GREETINGS)
    if missing == "customer_name":
        closing = rng.choice(SIGNOFFS) + ("." if rng.random() < 0.5 else "")
    elif rng.random() < 0.25:
        greeting = (greeting + " " if greeting else "") + f"this is {name}."
        closing = rng.choice(SIGNOFFS)
    else:
        closing = f"{rng.choice(SIGNOFFS)},\n{name}"
    body = " ".join(sentences)
    email = "\n\n".join(p for p in [greeting, body, closing] if p)
    answer = {"customer_name": name, "order_id": order, "product": product, "date": iso_date, "action": action}
    if missing:
        answer[missing] = None
    return {"instruction": INSTRUCTION, "input": email, "output": json.dumps(answer, ensure_ascii=False),
            "action": action}


def generate(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    n_missing = round(n * MISSING_SHARE)
    missing = [OPTIONAL[i % len(OPTIONAL)] for i in range(n_missing)] + [None] * (n - n_missing)
    rng.shuffle(missing)
    return [make_email(rng, m) for m in missing]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=900)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / "train.jsonl"))
    args = ap.parse_args()
    rows = generate(args.n, args.seed)
    out = Path(args.out)
    write_jsonl(out, rows)  # atomic: a half-written file never replaces a complete one
    nulls = sum(1 for r in rows if None in json.loads(r["output"]).values())
    print(f"wrote {len(rows)} emails to {out} ({nulls} with one field missing)")


if __name__ == "__main__":
    main()
