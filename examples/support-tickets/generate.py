"""Generate the support-ticket example dataset (seeded, reproducible).

Task: classify a customer support ticket by urgency and category, with a one-line reasoning.
Rows are in the instruction/input/output (Alpaca) format, plus the true labels as extra keys
(`urgency`, `category`) that the data stage can stratify on.

The labels follow fixed rules, so the task is learnable and a base model cannot already know it:

* category = what the ticket is about:
  Billing (charges, invoices, refunds), Technical (errors, crashes, slowness), Account (login,
  access, profile), Shipping (deliveries, tracking, damaged parcels), Security (suspicious
  activity, leaked credentials, phishing).
* urgency = who is affected and whether there is a way around it:
  Critical - everyone / production / the whole company is affected;
  High     - one person or team is blocked and has no workaround (or money is being lost now);
  Medium   - something is wrong but a workaround exists or it is intermittent;
  Low      - a question, how-to or request with no problem to fix.

Usage: python generate.py [--n 1600] [--seed 7] [--out data/tickets.jsonl]
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

INSTRUCTION = (
    "Triage this ticket. Reply with Urgency (Critical, High, Medium or Low), "
    "Category (Billing, Technical, Account, Shipping or Security) and a one-line Reasoning."
)
URGENCIES = ["Critical", "High", "Medium", "Low"]
CATEGORIES = ["Billing", "Technical", "Account", "Shipping", "Security"]

# problem statements per category: (text, short topic for the reasoning). {x} fields filled below.
PROBLEMS = {
    "Billing": [
        ("we were charged twice for the {plan} plan this month ({amount})", "duplicate charge"),
        ("invoice {invoice} shows {amount} but our contract says a lower price", "wrong invoice amount"),
        ("the refund for order {order} never arrived", "missing refund"),
        ("our card payment keeps getting declined at checkout", "declined payment"),
        ("we were billed for {seats} seats although we only use a few", "overbilling for seats"),
        ("the {plan} subscription renewed even though we cancelled it", "unwanted renewal"),
        ("VAT was added to invoice {invoice} although we gave our VAT number", "wrong tax on invoice"),
    ],
    "Technical": [
        ("the {product} crashes as soon as we open a report", "crash on opening reports"),
        ("the API returns error 500 on every call to /orders", "API errors"),
        ("the {product} is extremely slow, pages take a minute to load", "slow performance"),
        ("data sync between the {product} and our CRM stopped working", "broken data sync"),
        ("exports to CSV come out empty", "empty exports"),
        ("the {product} shows a blank white screen after the latest update", "blank screen after update"),
        ("webhooks are no longer delivered to our endpoint", "webhooks not delivered"),
    ],
    "Account": [
        ("I cannot log in, the site says my password is wrong even after a reset", "login failure"),
        ("the password reset email never arrives", "password reset email missing"),
        ("my account was locked after two login attempts", "locked account"),
        ("two-factor codes from the app are always rejected", "rejected 2FA codes"),
        ("I lost admin rights on our workspace after the role change", "lost admin access"),
        ("the invitation link for new users says it has expired", "expired invitation link"),
        ("single sign-on redirects back to the login page in a loop", "SSO login loop"),
    ],
    "Shipping": [
        ("order {order} has shown 'in transit' for {days} days", "stalled delivery"),
        ("the parcel for order {order} arrived damaged", "damaged parcel"),
        ("we received the wrong items in order {order}", "wrong items delivered"),
        ("the tracking number for order {order} does not work", "broken tracking number"),
        ("the courier marked order {order} as delivered but nothing came", "parcel marked delivered but missing"),
        ("half of the items in order {order} are missing from the box", "incomplete delivery"),
    ],
    "Security": [
        ("we see logins to our account from a country where nobody works", "suspicious logins"),
        ("an API key of ours was posted in a public repository", "leaked API key"),
        ("staff received phishing emails that look like they come from you", "phishing emails"),
        ("an unknown admin user appeared in our workspace", "unknown admin user"),
        ("files were shared publicly without anyone on our side doing it", "unexpected public sharing"),
        ("our audit log shows mass downloads at 3am by a disabled user", "suspicious mass downloads"),
    ],
}

QUESTIONS = {
    "Billing": [
        ("how do I download last year's invoices?", "invoice download question"),
        ("can we switch from monthly to annual billing?", "billing cycle question"),
        ("which payment methods do you accept?", "payment methods question"),
        ("could you add our PO number to future invoices?", "PO number request"),
    ],
    "Technical": [
        ("is there a rate limit on the API?", "API rate limit question"),
        ("does the {product} support dark mode?", "feature question"),
        ("where can I find the documentation for the export format?", "documentation question"),
        ("would it be possible to add a Gantt view in a future release?", "feature request"),
    ],
    "Account": [
        ("how do I change the email address on my account?", "email change question"),
        ("can I rename our workspace?", "workspace rename question"),
        ("how do I add a colleague as a viewer?", "user permissions question"),
        ("what happens to my data if I close my account?", "account closure question"),
    ],
    "Shipping": [
        ("do you ship to Norway?", "shipping destinations question"),
        ("how long does express delivery usually take?", "delivery time question"),
        ("can I change the delivery address for a future order?", "address change question"),
        ("do you offer carbon-neutral shipping?", "shipping options question"),
    ],
    "Security": [
        ("do you have a SOC 2 report we could review?", "compliance report question"),
        ("how often do you rotate encryption keys?", "encryption question"),
        ("can we enforce two-factor login for all our users?", "2FA policy question"),
        ("where is our data stored geographically?", "data residency question"),
    ],
}

IMPACT = {
    "Critical": [
        ("This is happening for all of our users right now.", "affects all users"),
        ("Our whole company is affected and production is down.", "production down for the whole company"),
        ("Every customer of ours is hitting this since this morning.", "hits every customer"),
        ("Nobody in the organisation can work because of it.", "blocks the entire organisation"),
        ("All {seats} people on our team are affected at once.", "affects the entire team"),
        ("This affects every single account we have.", "affects every account"),
    ],
    "High": [
        ("I am completely blocked and there is no workaround.", "one user blocked with no workaround"),
        ("Our finance team cannot close the month until this is fixed, and nothing else works.", "one team blocked with no workaround"),
        ("It only affects me, but I cannot do my job at all.", "one user fully blocked"),
        ("I have tried everything I could think of and I am stuck.", "user stuck with no workaround"),
        ("Our team's work is blocked and we have no other way to do it.", "team blocked with no workaround"),
    ],
    "Medium": [
        ("We found a workaround for now, but please look into it.", "workaround exists"),
        ("It happens now and then, not every time.", "intermittent problem"),
        ("It is annoying, but we can still work around it.", "annoying but has a workaround"),
        ("Refreshing the page a few times usually helps.", "workaround by retrying"),
        ("We can manage manually in the meantime.", "manual workaround available"),
    ],
    "Low": [
        ("No rush, just curious.", "no problem to fix"),
        ("Whenever you have time.", "not time-sensitive"),
        ("Just wanted to ask before we plan next quarter.", "planning question"),
        ("Thanks in advance for the info!", "information request"),
    ],
}

GREETINGS = ["Hi,", "Hello,", "Hello support,", "Hi team,", "Dear support,", "Good morning,", "Hey,", ""]
SIGNOFFS = ["Thanks", "Regards", "Best", "Cheers", "Thank you", "Kind regards", ""]
NAMES = ["Maria", "Tom", "Aisha", "Kenji", "Priya", "Lukas", "Sofia", "Daniel", "Chen", "Olga", "Marco", "Fatima",
         "Jonas", "Elena", "Sam", "Grace", "Ravi", "Nora", "Ahmed", "Lea"]
COMPANIES = ["Northwind", "Globex", "Initech", "Umbrella Foods", "Stark Logistics", "Wayne Retail", "Acme Legal",
             "Blue Harbor", "Pinecrest Clinic", "Vertex Labs"]
PRODUCTS = ["dashboard", "mobile app", "desktop app", "reporting module", "admin console", "web app"]
PLANS = ["Pro", "Team", "Business", "Enterprise", "Starter"]
DETAILS = [
    "We are on the {plan} plan.",
    "Our account ID is {acct}.",
    "This started {when}.",
    "I already checked the help center.",
    "Screenshots attached.",
    "Ticket reference {ref}.",
    "",
    "",
]
WHENS = ["yesterday", "this morning", "after the update on Monday", "two days ago", "an hour ago", "last week"]
REASONING = [
    "{topic}; {impact}.",
    "{topic_cap} - {impact}.",
    "{impact_cap}: {topic}.",
]


def _fill(text: str, rng: random.Random) -> str:
    return text.format(
        plan=rng.choice(PLANS),
        amount=f"${rng.randint(20, 4000)}.{rng.randint(0, 99):02d}",
        invoice=f"INV-{rng.randint(10000, 99999)}",
        order=f"#{rng.randint(100000, 999999)}",
        seats=rng.choice([12, 25, 40, 80, 150, 300]),
        product=rng.choice(PRODUCTS),
        days=rng.randint(6, 20),
        acct=f"AC-{rng.randint(1000, 9999)}",
        when=rng.choice(WHENS),
        ref=f"{rng.choice('ABCDEFGH')}{rng.randint(100, 999)}",
    )


def make_ticket(rng: random.Random, urgency: str, category: str) -> dict:
    pool = QUESTIONS[category] if urgency == "Low" else PROBLEMS[category]
    issue, topic = rng.choice(pool)
    impact, impact_note = rng.choice(IMPACT[urgency])
    issue = _fill(issue, rng)
    impact = _fill(impact, rng)
    opener = rng.choice(["", "", "Quick one: ", "Urgent-ish: " if urgency != "Low" else "", "FYI: "])
    issue_sentence = opener + issue[0].upper() + issue[1:]
    if not issue_sentence.endswith(("?", ".")):
        issue_sentence += "."
    parts = [rng.choice(GREETINGS), issue_sentence]
    detail = _fill(rng.choice(DETAILS), rng)
    body = [impact, detail] if rng.random() < 0.5 else [detail, impact]
    parts += body
    sign = rng.choice(SIGNOFFS)
    if sign:
        parts.append(f"{sign}, {rng.choice(NAMES)} ({rng.choice(COMPANIES)})")
    ticket = " ".join(p for p in parts if p)
    reasoning = rng.choice(REASONING).format(
        topic=topic, topic_cap=topic[0].upper() + topic[1:], impact=impact_note,
        impact_cap=impact_note[0].upper() + impact_note[1:],
    )
    reasoning = reasoning[0].upper() + reasoning[1:]
    output = f"Urgency: {urgency}\nCategory: {category}\nReasoning: {reasoning}"
    return {"instruction": INSTRUCTION, "input": ticket, "output": output, "urgency": urgency, "category": category,
            "label": f"{urgency}/{category}"}


def generate(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    # urgency mix of a real queue: most tickets are Medium/Low, few are Critical
    weights = {"Critical": 0.15, "High": 0.25, "Medium": 0.3, "Low": 0.3}
    rows, seen = [], set()
    while len(rows) < n:
        urgency = rng.choices(URGENCIES, weights=[weights[u] for u in URGENCIES])[0]
        category = rng.choice(CATEGORIES)
        row = make_ticket(rng, urgency, category)
        if row["input"] in seen:
            continue
        seen.add(row["input"])
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1600)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "data" / "tickets.jsonl")
    args = ap.parse_args()
    rows = generate(args.n, args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(args.out)
    print(f"wrote {len(rows)} tickets to {args.out}")


if __name__ == "__main__":
    main()
