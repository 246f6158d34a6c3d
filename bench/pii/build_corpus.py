# ruff: noqa: E501
"""Build ``corpus.jsonl``: labelled snippets for measuring PII redaction (``measure.py``).

Each line: ``{"text": ..., "pii": [[value, ENTITY], ...], "kind": "pii" | "lookalike"}``.
Values are realistic formats from several countries (valid checksums where the format has one:
Luhn for cards, ISO 7064 mod 97 for IBANs); look-alikes are text that is *not* PII but resembles
it: order and tracking numbers, card-length numbers failing Luhn, IBAN-shaped strings with a
bad checksum, dates, versions, prices, obfuscated addresses. Deterministic (seeded):

    python bench/pii/build_corpus.py      # rewrites bench/pii/corpus.jsonl
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

OUT = Path(__file__).resolve().parent / "corpus.jsonl"
rng = random.Random(20261201)

FIRST = ["ana", "john", "li", "fatima", "lars", "chloe", "mateo", "yuki", "olga", "kwame", "priya"]
LAST = ["garcia", "smith", "wang", "haddad", "nielsen", "dubois", "rossi", "tanaka", "ivanova"]
DOMAINS = [
    "example.com",
    "mail.example.co.uk",
    "example.de",
    "beispiel.de",
    "exemple.fr",
    "example.es",
    "ejemplo.com.mx",
    "example.co.jp",
    "example.in",
    "uni-example.edu",
    "example.org",
    "example.io",
    "example.com.br",
    "example.nl",
    "example.ch",
]


def email() -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    local = rng.choice(
        [
            f"{first}.{last}",
            f"{first}_{last}{rng.randint(1, 99)}",
            f"{first[0]}{last}",
            f"{first}+news",
            f"{last}.{first}-{rng.randint(1, 9)}",
        ]
    )
    return f"{local}@{rng.choice(DOMAINS)}"


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return str((10 - total % 10) % 10)


def card(valid: bool = True) -> str:
    prefix, length = rng.choice(
        [("4", 16), ("51", 16), ("55", 16), ("2221", 16), ("34", 15), ("37", 15), ("6011", 16)]
    )
    body = prefix + "".join(rng.choice(string.digits) for _ in range(length - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + rng.randint(1, 9)) % 10)
    number = body + check
    style = rng.choice(["plain", "spaces", "dashes"])
    if length == 15:
        groups = [number[:4], number[4:10], number[10:]]
    else:
        groups = [number[i : i + 4] for i in range(0, 16, 4)]
    if style == "spaces":
        return " ".join(groups)
    if style == "dashes":
        return "-".join(groups)
    return number


IBAN_FORMATS = {  # country: (length of the BBAN, its characters)
    "DE": (18, "n"),
    "FR": (23, "n"),
    "GB": (18, "GB"),
    "ES": (20, "n"),
    "NL": (14, "NL"),
    "IT": (23, "IT"),
    "BE": (12, "n"),
    "CH": (17, "n"),
    "PL": (24, "n"),
    "AT": (16, "n"),
}


def _bban(country: str) -> str:
    length, kind = IBAN_FORMATS[country]
    if kind == "GB":
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            rng.choice(string.digits) for _ in range(length - 4)
        )
    if kind == "NL":
        return "".join(rng.choice(string.ascii_uppercase) for _ in range(4)) + "".join(
            rng.choice(string.digits) for _ in range(length - 4)
        )
    if kind == "IT":
        return rng.choice(string.ascii_uppercase) + "".join(
            rng.choice(string.digits) for _ in range(length - 1)
        )
    return "".join(rng.choice(string.digits) for _ in range(length))


def iban(valid: bool = True, spaced: bool | None = None) -> str:
    country = rng.choice(list(IBAN_FORMATS))
    bban = _bban(country)
    moved = bban + country + "00"
    numeric = "".join(str(int(c, 36)) for c in moved)
    check = 98 - int(numeric) % 97
    if not valid:
        check = (check + rng.randint(1, 50)) % 97 + 2
    value = f"{country}{check:02d}{bban}"
    if spaced if spaced is not None else rng.random() < 0.5:
        value = " ".join(value[i : i + 4] for i in range(0, len(value), 4))
    return value


def ipv4() -> str:
    first = rng.choice([10, 172, 192, 81, 203, 34, 52, 185])
    return f"{first}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"


def ipv6() -> str:
    groups = [f"{rng.randint(0, 0xFFFF):x}" for _ in range(8)]
    if rng.random() < 0.5:
        return "2001:db8:" + ":".join(groups[2:4]) + "::" + groups[7]
    return ":".join(groups)


def ssn() -> str:
    area = rng.choice([n for n in range(1, 900) if n != 666])
    return f"{area:03d}-{rng.randint(1, 99):02d}-{rng.randint(1, 9999):04d}"


def phone() -> str:
    return rng.choice(
        [
            f"+1 {rng.randint(201, 989)}-555-{rng.randint(1000, 9999)}",
            f"({rng.randint(201, 989)}) 555-{rng.randint(1000, 9999)}",
            f"+44 20 7946 {rng.randint(1000, 9999)}",
            f"+49 30 {rng.randint(1000000, 9999999)}",
            f"+33 1 {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
            f"+34 91 {rng.randint(100, 999)} {rng.randint(10, 99)} {rng.randint(10, 99)}",
            f"+81 3-{rng.randint(1000, 9999)}-{rng.randint(1000, 9999)}",
            f"+91 98{rng.randint(10000000, 99999999)}",
        ]
    )


def url() -> str:
    return rng.choice(
        [
            f"https://{rng.choice(DOMAINS)}/account/{rng.randint(1000, 9999)}",
            f"http://{rng.choice(DOMAINS)}/reset?token={rng.randint(10**8, 10**9)}",
            f"https://www.{rng.choice(DOMAINS)}/",
        ]
    )


PII_TEMPLATES = {
    "PHONE_NUMBER": [
        "Call me on {v} after six.",
        "Tel.: {v}",
        "Phone {v} (mobile)",
        "Rappelez le {v} demain.",
    ],
    "URL": [
        "Open {v} to see the order.",
        "Link: {v}",
        "Reset it at {v} within an hour.",
    ],
    "EMAIL_ADDRESS": [
        "Please write to {v} before Friday.",
        "From: {v}\nSubject: invoice",
        "Kontakt: {v} (Vertrieb)",
        "Contactez-moi à {v}, merci.",
        "cc {v}; the customer asked for a refund",
        "Escríbeme a <{v}> si tienes dudas.",
        "User {v} reset their password at 09:14.",
    ],
    "CREDIT_CARD": [
        "Card number {v}, expiry 08/27.",
        "Charge it to {v} please.",
        "Kartennummer: {v}",
        "Payé avec la carte {v} hier.",
        "The customer read out {v} over the phone.",
        "cc={v} cvv=***",
    ],
    "IBAN_CODE": [
        "Please transfer to IBAN {v}.",
        "Bankverbindung: {v} (Sparkasse)",
        "RIB / IBAN : {v}",
        "Refund to account {v} by Monday.",
        "Cuenta para el pago: {v}",
    ],
    "IP_ADDRESS": [
        "Login from {v} was blocked.",
        "The request came from {v} at 03:12 UTC.",
        "Server {v} answered 503.",
        "Zugriff von {v} verweigert.",
        "client_ip={v} status=200",
    ],
    "US_SSN": [
        "SSN: {v}",
        "Her social security number is {v}.",
        "Applicant SSN {v}, DOB on file.",
        "Verify SSN {v} against the W-2.",
    ],
}

LOOKALIKES = [
    lambda: (
        f"Order #{rng.randint(10**7, 10**8)} ships on {rng.randint(1, 28)}.0{rng.randint(1, 9)}.2025."
    ),
    lambda: (
        f"Tracking number {rng.choice(['1Z', 'JD'])}{rng.randint(10**15, 10**16)} is in transit."
    ),
    lambda: f"Reference {card(valid=False)} could not be matched.",
    lambda: (
        f"Invoice 2024-{rng.randint(1000, 9999)} totals €{rng.randint(10, 999)},{rng.randint(10, 99)}."
    ),
    lambda: f"Meeting on 2025-0{rng.randint(1, 9)}-1{rng.randint(0, 9)} at 14:30 in room 4.12.",
    lambda: (
        f"Upgrade to version {rng.randint(1, 3)}.{rng.randint(0, 20)}.{rng.randint(0, 9)} first."
    ),
    lambda: f"The account id {iban(valid=False, spaced=False)} failed its check.",
    lambda: f"Write to support at example dot com, ticket {rng.randint(100000, 999999)}.",
    lambda: (
        f"Price: ${rng.randint(1, 99)}.{rng.randint(10, 99)} per {rng.choice(['month', 'seat'])}."
    ),
    lambda: (
        f"ISBN 978-{rng.randint(0, 9)}-{rng.randint(100, 999)}-{rng.randint(10000, 99999)}-{rng.randint(0, 9)}"
    ),
    lambda: f"Part no. {rng.randint(100, 999)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}-B",
    lambda: (
        f"Batch {rng.randint(10**11, 10**12)} passed QA on {rng.randint(1, 12)}/{rng.randint(1, 28)}."
    ),
    lambda: f"Use the @{rng.choice(FIRST)} handle in chat; mentions like @team are fine.",
    lambda: f"Ratio {rng.randint(1, 9)}:{rng.randint(1, 9)}, score {rng.randint(50, 99)}%.",
]


def main() -> None:
    rows = []
    makers = {
        "EMAIL_ADDRESS": email,
        "CREDIT_CARD": card,
        "IBAN_CODE": iban,
        "IP_ADDRESS": lambda: ipv4() if rng.random() < 0.7 else ipv6(),
        "US_SSN": ssn,
        "PHONE_NUMBER": phone,
        "URL": url,
    }
    for entity, maker in makers.items():
        for i in range(40):
            value = maker()
            template = PII_TEMPLATES[entity][i % len(PII_TEMPLATES[entity])]
            rows.append({"text": template.format(v=value), "pii": [[value, entity]], "kind": "pii"})
    for _ in range(30):  # several entities in one snippet
        chosen = rng.sample(list(makers)[:5], 3)
        values = [(makers[e](), e) for e in chosen]
        text = "; ".join(f"{e.lower().replace('_', ' ')}: {v}" for v, e in values)
        rows.append(
            {"text": f"Ticket notes - {text}.", "pii": [[v, e] for v, e in values], "kind": "pii"}
        )
    for i in range(100):
        rows.append({"text": LOOKALIKES[i % len(LOOKALIKES)](), "pii": [], "kind": "lookalike"})
    with OUT.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} snippets to {OUT}")


if __name__ == "__main__":
    main()
