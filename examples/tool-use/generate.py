"""Generate the tool-use example dataset (seeded, reproducible, no downloads).

Task: the customer-service assistant of an online homeware shop decides, for each customer message,
whether to call one of five functions (or several at once) and with which arguments, or to answer in
text. Rows are OpenAI chat-format records: ``tools`` (the five function definitions), ``messages``
with assistant ``tool_calls`` (``arguments`` as JSON text) and ``role: tool`` results, plus a ``label``
(what the last turn does: a function name, ``parallel`` or ``no_call``) that the data stage stratifies the
held-out test split on.

What the last assistant turn does (shares for the default seed):

* about 55%: one call (get_order_status, refund_order, update_address, search_products, cancel_order),
  arguments taken from the message (order ids written several ways, refund reasons paraphrased into the
  enum, optional ``max_results`` only when the customer gives a number);
* about 15%: two calls at once (two orders' status, or a refund and a search, ...);
* about 30%: no call: shop-policy questions and small talk answered in text, and conversations where the
  tool already answered and the assistant reports the result.

Phrasings come from many templates with varied openers, politeness and typos, so the mapping cannot
be memorised from a handful of strings.

Usage: python generate.py [--n 1200] [--seed 11] [--out data/tool_use.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from tunesmith.utils.io import write_jsonl

SYSTEM = ("You are the assistant of Larkspur Home, an online homeware shop. Call a function when you need order "
          "data or must act on an order; otherwise answer briefly yourself.")

REASONS = ["damaged", "late", "wrong_item", "not_received", "changed_mind"]
TOOLS = [
    {"type": "function", "function": {
        "name": "get_order_status", "description": "Status and delivery date of an order.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {
        "name": "refund_order", "description": "Refund an order.",
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string"}, "reason": {"type": "string", "enum": REASONS}},
            "required": ["order_id", "reason"]}}},
    {"type": "function", "function": {
        "name": "update_address", "description": "Change the delivery address of an order not yet shipped.",
        "parameters": {"type": "object", "properties": {
            "order_id": {"type": "string"}, "street": {"type": "string"}, "city": {"type": "string"},
            "zip": {"type": "string"}}, "required": ["order_id", "street", "city", "zip"]}}},
    {"type": "function", "function": {
        "name": "search_products", "description": "Search the catalogue.",
        "parameters": {"type": "object", "properties": {
            "query": {"type": "string"}, "max_results": {"type": "integer", "minimum": 1, "maximum": 20}},
            "required": ["query"]}}},
    {"type": "function", "function": {
        "name": "cancel_order", "description": "Cancel an order not yet shipped.",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
]

OPENERS = ["", "", "", "Hi, ", "Hello! ", "Hey, ", "Good morning. ", "Hi there, ", "Quick question: ", "Sorry to bother you, "]
CLOSERS = ["", "", "", " Thanks!", " Thank you.", " Cheers", " thx", " Appreciate it.", " Please help."]
STREETS = ["Maple Street", "Harbour Road", "Elm Avenue", "Station Lane", "Mill Close", "Quarry Way", "Beacon Hill",
           "Orchard Row", "Canal Walk", "Foxglove Drive"]
CITIES = ["Leeds", "Bristol", "Norwich", "Cardiff", "York", "Bath", "Exeter", "Dundee", "Derby", "Lincoln"]
PRODUCTS = ["linen duvet cover", "oak side table", "ceramic table lamp", "wool throw", "bamboo bath mat",
            "cast iron skillet", "velvet cushion", "rattan laundry basket", "glass storage jars", "blackout curtains",
            "standing desk", "bedside clock", "copper kettle", "jute rug", "walnut bookshelf"]

STATUS = ["where is my order {oid}?", "can you check the status of order {oid}", "has {oid} shipped yet?",
          "any news on {oid}? it still hasn't come", "what's happening with my order {oid}",
          "when will order {oid} arrive?", "track {oid} please", "i ordered something ({oid}), is it on its way?",
          "status for {oid}?", "could you look up order {oid} for me"]
REFUND = {
    "damaged": ["order {oid} arrived broken, I want my money back", "the lamp in {oid} came smashed, refund please",
                "{oid} was damaged in transit. please refund it", "refund {oid}, the box was crushed and the item cracked"],
    "late": ["{oid} came two weeks late and I no longer need it, refund please",
             "order {oid} arrived way too late for the party. I'd like a refund", "refund {oid}, it was late"],
    "wrong_item": ["you sent me the wrong thing in {oid}, I want a refund", "order {oid} had a different product "
                   "inside, please refund", "refund {oid} - wrong item delivered"],
    "not_received": ["I never got order {oid}, refund me please", "{oid} says delivered but nothing came. refund?",
                     "order {oid} never showed up, I want my money back"],
    "changed_mind": ["I changed my mind about {oid}, can I get a refund?", "please refund order {oid}, I don't want "
                     "it anymore", "refund {oid}, decided I don't need it"],
}
ADDRESS = ["please send {oid} to {street} {num}, {city} {zip} instead", "I moved! new address for order {oid}: "
           "{num} {street}, {city}, {zip}", "change the delivery address of {oid} to {num} {street}, {zip} {city}",
           "can order {oid} go to {num} {street} in {city} ({zip})?"]
SEARCH = ["do you sell a {product}?", "looking for a {product}", "show me {product}s",
          "have you got any {product} in stock", "I need a {product}, what do you have"]
SEARCH_N = ["show me {n} {product} options", "list {n} {product}s please", "give me up to {n} results for {product}",
            "find me {n} different {product}s"]
CANCEL = ["cancel order {oid}", "please cancel {oid}, I ordered by mistake", "I want to cancel my order {oid}",
          "stop order {oid}, don't ship it", "can you cancel {oid} before it ships?"]
NO_CALL = [
    ("what is your return policy?", "You can return any item within 30 days of delivery for a full refund."),
    ("how long do I have to send something back?", "Returns are accepted within 30 days of delivery."),
    ("do you ship to Ireland?", "Yes, we ship to the UK and Ireland; delivery to Ireland takes 3-5 working days."),
    ("how much is delivery?", "Delivery is free over £50; below that it costs £4.95."),
    ("what are your opening hours for the phone line?", "Our phone line is open 9am to 5pm, Monday to Friday."),
    ("can I pay with PayPal?", "Yes, we accept PayPal as well as all major cards."),
    ("do you have a physical shop?", "No, Larkspur Home is online only."),
    ("thanks, that's all!", "You're welcome, have a lovely day!"),
    ("hello", "Hello! How can I help you today?"),
    ("is there a discount for students?", "Yes, students get 10% off with a valid student email."),
    ("how do I reset my password?", "Use 'Forgot password' on the sign-in page and follow the emailed link."),
    ("are your candles vegan?", "Yes, all our candles are made with soy wax and are vegan."),
]
STATUS_RESULTS = [("shipped, arriving {day}", "Your order {oid} has shipped and should arrive {day}."),
                  ("processing, ships tomorrow", "Order {oid} is being prepared and ships tomorrow."),
                  ("delivered on {day}", "Order {oid} was delivered on {day}.")]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def order_id(rng: random.Random) -> tuple[str, str]:
    """(the id as the functions take it, as the customer writes it)."""
    n = rng.randrange(10000, 99999)
    canonical = f"LH-{n}"
    return canonical, rng.choice([canonical, canonical, f"#{canonical}", f"{canonical.lower()}", f"order no. {canonical}"])


def ask(rng: random.Random, text: str) -> str:
    text = text[0].upper() + text[1:] if rng.random() < 0.7 else text
    return f"{rng.choice(OPENERS)}{text}{rng.choice(CLOSERS)}".strip()


def one_call(rng: random.Random) -> tuple[str, dict, str]:
    """(the customer's request, the call as {name, arguments}, its label)."""
    kind = rng.choices(["status", "refund", "address", "search", "cancel"], weights=[3, 3, 2, 2, 2])[0]
    oid, said = order_id(rng)
    if kind == "status":
        return rng.choice(STATUS).format(oid=said), {"name": "get_order_status", "arguments": {"order_id": oid}}, kind
    if kind == "refund":
        reason = rng.choice(REASONS)
        return (rng.choice(REFUND[reason]).format(oid=said),
                {"name": "refund_order", "arguments": {"order_id": oid, "reason": reason}}, kind)
    if kind == "address":
        street, city = rng.choice(STREETS), rng.choice(CITIES)
        num, zip_ = str(rng.randrange(1, 200)), f"{rng.choice('BCDELMNSY')}{rng.choice('STNLRE')}{rng.randrange(1, 30)} " \
            f"{rng.randrange(1, 9)}{rng.choice('ABDEFGHJ')}{rng.choice('LNPQRTUW')}"
        text = rng.choice(ADDRESS).format(oid=said, street=street, num=num, city=city, zip=zip_)
        return text, {"name": "update_address", "arguments": {"order_id": oid, "street": f"{num} {street}",
                                                              "city": city, "zip": zip_}}, kind
    if kind == "search":
        product = rng.choice(PRODUCTS)
        if rng.random() < 0.4:
            n = rng.randrange(2, 11)
            return (rng.choice(SEARCH_N).format(n=n, product=product),
                    {"name": "search_products", "arguments": {"query": product, "max_results": n}}, kind)
        return rng.choice(SEARCH).format(product=product), {"name": "search_products", "arguments": {"query": product}}, kind
    return rng.choice(CANCEL).format(oid=said), {"name": "cancel_order", "arguments": {"order_id": oid}}, kind


def calling_turn(calls: list[dict], ids: list[str]) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": i, "type": "function", "function": {"name": c["name"], "arguments": json.dumps(c["arguments"])}}
        for c, i in zip(calls, ids)]}


def record(rng: random.Random, i: int) -> dict:
    r = rng.random()
    head = [{"role": "system", "content": SYSTEM}]
    if r < 0.55:  # one call
        text, call, _ = one_call(rng)
        msgs = [{"role": "user", "content": ask(rng, text)}, calling_turn([call], [f"call_{i}_0"])]
        label = call["name"]
    elif r < 0.70:  # two calls at once
        (t1, c1, k1), (t2, c2, _) = one_call(rng), one_call(rng)
        joiner = rng.choice([" Also, ", " And ", ". Second thing: ", " - oh and "])
        msgs = [{"role": "user", "content": ask(rng, t1.rstrip("?.!") + joiner + t2[0].lower() + t2[1:])},
                calling_turn([c1, c2], [f"call_{i}_0", f"call_{i}_1"])]
        label = "parallel"
    elif r < 0.85:  # policy questions and small talk
        q, a = rng.choice(NO_CALL)
        msgs = [{"role": "user", "content": ask(rng, q)}, {"role": "assistant", "content": a}]
        label = "no_call"
    else:  # the tool already answered: report the result
        oid, said = order_id(rng)
        result, answer = rng.choice(STATUS_RESULTS)
        day = rng.choice(DAYS)
        call = {"name": "get_order_status", "arguments": {"order_id": oid}}
        msgs = [{"role": "user", "content": ask(rng, rng.choice(STATUS).format(oid=said))},
                calling_turn([call], [f"call_{i}_0"]),
                {"role": "tool", "tool_call_id": f"call_{i}_0", "name": "get_order_status",
                 "content": json.dumps({"order_id": oid, "status": result.format(day=day)})},
                {"role": "assistant", "content": answer.format(oid=oid, day=day)}]
        label = "no_call"
    return {"messages": head + msgs, "tools": TOOLS, "label": label}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1200)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "tool_use.jsonl")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rows = [record(rng, i) for i in range(args.n)]
    write_jsonl(args.out, rows)  # atomic: a half-written file never replaces a complete one
    labels: dict[str, int] = {}
    for r in rows:
        labels[r["label"]] = labels.get(r["label"], 0) + 1
    print(f"wrote {len(rows)} conversations to {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(labels.items())))


if __name__ == "__main__":
    main()
