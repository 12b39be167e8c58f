"""Generate the routing-code example (seeded, reproducible, no downloads).

Task: route an incoming customer message to one internal queue code. The codes are a made-up
scheme that no base model can know (they exist only in this company's playbook):

    RT-BILL-1  billing question (how to pay, invoice copies, billing cycle)
    RT-BILL-2  billing dispute: money taken wrongly (double charge, charged after cancelling)
    RT-TECH-1  product bug for one user (error, crash, slowness), work can continue
    RT-TECH-3  outage: the service is down for everyone / many users
    RT-ACCT-1  account admin (change email, add a seat, rename workspace)
    RT-ACCT-2  account security (locked out, suspicious login, leaked password)
    RT-SHIP-1  delivery status (where is my parcel, delayed)
    RT-SHIP-2  delivery damage or wrong items
    RT-LEGL-1  privacy / legal request (delete my data, GDPR export, contract terms)
    RT-SALE-1  buying more (upgrade, quote, volume discount)

The answer is the code alone. Each message is built from one of several phrasings of a situation,
with varied openings, details, tone and sign-offs, and some messages mention a second topic in
passing ("also, thanks for the quick invoice last time") that must not change the route.

Usage: python generate.py [--n 800] [--seed 13] [--out data/train.jsonl]
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from tunesmith.utils.io import write_jsonl

INSTRUCTION = "Route this customer message to its queue. Answer with the routing code only."

SITUATIONS = {
    "RT-BILL-1": ["how do I get a copy of last month's invoice?", "can we pay by bank transfer instead of card?",
                  "when does the annual billing cycle start?", "is it possible to put our PO number on the invoices?",
                  "what currency will we be billed in after the move to {city}?",
                  "where in the {product} do I see my billing history?"],
    "RT-BILL-2": ["you charged my card twice this month ({amount} each time)",
                  "we cancelled in {month} and you still took {amount}",
                  "there is a charge of {amount} I never agreed to", "the refund you promised never reached my account",
                  "we are being billed for {seats} seats but only use a handful",
                  "my card was charged {amount} for a plan I downgraded weeks ago"],
    "RT-TECH-1": ["the {product} crashes every time I open the export screen",
                  "I get an error 'sync failed' on my laptop, colleagues are fine",
                  "the {product} has been really slow for me since {month}",
                  "charts in the {product} show no data for my projects",
                  "the search box in the {product} returns nothing for me",
                  "my uploads stop at 99% but I can still work otherwise"],
    "RT-TECH-3": ["nobody in our company can open the {product} - it just times out",
                  "your API is returning 503 for all our services", "the whole {product} is down for every user here",
                  "all {seats} of our users see a blank page since this morning",
                  "the login page is unreachable for everyone in the {city} office and remote staff too",
                  "every integration we have with you stopped at the same time"],
    "RT-ACCT-1": ["please change the email on my account to my new work address",
                  "can you add {seats} more seats to our workspace?", "how do I rename our workspace?",
                  "I need to transfer ownership of the account to my colleague",
                  "please remove a user who left the company", "can I change the language of the {product} to German?"],
    "RT-ACCT-2": ["someone logged into my account from a country I have never been to",
                  "I am locked out after the two-factor reset", "I think my password leaked in a breach, what should I do?",
                  "I got a login alert at 3am that was not me", "an unknown admin appeared in our workspace",
                  "my account says it is suspended and I cannot get in"],
    "RT-SHIP-1": ["where is my parcel? tracking has not moved for {days} days",
                  "order {order} was due on Monday and still has not arrived",
                  "can you tell me when order {order} will be delivered?",
                  "the courier keeps postponing the delivery of order {order}",
                  "tracking for order {order} just says 'label created'", "my delivery to {city} seems stuck in customs"],
    "RT-SHIP-2": ["the box for order {order} arrived crushed and the item is broken",
                  "I received someone else's items instead of mine", "two of the {seats} items in order {order} are missing",
                  "the screen of the monitor came cracked", "you sent the blue one, I ordered black",
                  "order {order} arrived wet and the contents are ruined"],
    "RT-LEGL-1": ["please delete all personal data you hold about me", "I want a copy of my data under GDPR",
                  "our lawyer needs the signed data processing agreement",
                  "can you confirm where our customer data is stored for our audit?",
                  "please send the current terms of service we agreed to in {month}",
                  "I withdraw my consent to marketing and want my records erased"],
    "RT-SALE-1": ["we'd like a quote for {seats} more licences", "what would it cost to upgrade to the Enterprise plan?",
                  "do you offer a discount for nonprofits?", "we are thinking of rolling the {product} out to our {city} office",
                  "can we get volume pricing for {seats} users?", "I'd like to book a demo of the premium features"],
}
OPENERS = ["Hi,", "Hello,", "Hi team,", "Dear support,", "Good morning,", "Hey there,", "", "", "Hello support team,"]
LEADS = ["", "", "Quick question: ", "Hi again - ", "Urgent: ", "Not sure who to ask, but ", "FYI ", "Please help: "]
ASIDES = ["Also, thanks for the quick answer last time.", "By the way, love the new design.",
          "I already looked in the help center.", "Our account number is AC-{acct}.", "I'm writing from my phone.",
          "This is the second time I'm writing.", "", "", "", ""]
SIGNOFFS = ["Thanks", "Regards", "Best", "Cheers", "Thank you", "Kind regards", "-- sent from my phone", ""]
NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Priya", "Lukas", "Sofia", "Daniel", "Chen", "Olga", "Marco", "Fatima"]
PRODUCTS = ["dashboard", "mobile app", "desktop app", "reporting module", "admin console", "web app"]
CITIES = ["Lisbon", "Toronto", "Nairobi", "Osaka", "Berlin", "Austin", "Melbourne", "Warsaw"]
MONTHS = ["January", "March", "May", "July", "September", "November"]


def _fill(text: str, rng: random.Random) -> str:
    return text.format(amount=f"${rng.randint(9, 2400)}.{rng.randint(0, 99):02d}", seats=rng.choice([3, 5, 12, 25, 40, 120]),
                       month=rng.choice(MONTHS), product=rng.choice(PRODUCTS), city=rng.choice(CITIES),
                       days=rng.randint(4, 15), order=f"#{rng.randint(100000, 999999)}", acct=rng.randint(1000, 9999))


def make_message(rng: random.Random, code: str) -> dict:
    situation = _fill(rng.choice(SITUATIONS[code]), rng)
    lead = rng.choice(LEADS)
    text = (lead + situation) if lead else situation[0].upper() + situation[1:]
    if not text.endswith(("?", ".", "!")):
        text += rng.choice([".", ".", "!", ""])
    if rng.random() < 0.15:
        text = text.lower()
    aside = _fill(rng.choice(ASIDES), rng)
    body = [aside, text] if aside and rng.random() < 0.3 else [text, aside]
    signoff = rng.choice(SIGNOFFS)
    if signoff and rng.random() < 0.6:
        signoff += f",\n{rng.choice(NAMES)}"
    parts = [rng.choice(OPENERS), " ".join(p for p in body if p), signoff]
    return {"instruction": INSTRUCTION, "input": "\n\n".join(p for p in parts if p), "output": code, "label": code}


def generate(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    codes = [list(SITUATIONS)[i % len(SITUATIONS)] for i in range(n)]  # balanced
    rng.shuffle(codes)
    return [make_message(rng, c) for c in codes]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=800)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default=str(Path(__file__).parent / "data" / "train.jsonl"))
    args = ap.parse_args()
    rows = generate(args.n, args.seed)
    out = Path(args.out)
    write_jsonl(out, rows)  # atomic: a half-written file never replaces a complete one
    print(f"wrote {len(rows)} messages to {out} ({len(SITUATIONS)} routing codes)")


if __name__ == "__main__":
    main()
