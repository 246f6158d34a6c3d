"""The local-model task set: 36 small cases in the shapes workflows use, with automatic checks.

Six shapes, six cases each: a paragraph, a title, a short list, a number, a yes/no answer and
an extraction from a given text. Each case is one node (a prompt and its ``output_schema``);
its check looks only at the node's validated output: length, topic words, type, list size,
exact answers. Used by ``bench/local_taskset.py``; kept apart so the cases are easy to read.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

Check = Callable[[dict[str, Any]], str | None]  # None: passed; else why it failed


@dataclass(frozen=True)
class Case:
    shape: str
    prompt: str
    fields: list[tuple[str, str, str]]  # (name, type, description)
    check: Check
    # bounds the workflow declares on a state field (config.bounds), as a user asking for
    # "3 items" would: {"items": {"min_items": 3, "max_items": 3}}
    bounds: dict[str, dict[str, Any]] = field(default_factory=dict)


def words(text: str) -> list[str]:
    return re.findall(r"[A-Za-z0-9']+", text)


def mentions(text: str, keywords: tuple[str, ...]) -> bool:
    low = text.lower()
    return any(k.lower() in low for k in keywords)


def norm(text: Any) -> str:
    return re.sub(r"[^a-z0-9 ]", "", str(text).lower()).strip()


def paragraph(topic: str, keywords: tuple[str, ...]) -> Case:
    def check(out: dict[str, Any]) -> str | None:
        text = out["paragraph"]
        n = len(words(text))
        if not 15 <= n <= 250:
            return f"{n} words"
        if not mentions(text, keywords):
            return "off topic"
        return None

    return Case(
        "paragraph",
        f"Write a short paragraph of three sentences about {topic}.",
        [("paragraph", "str", "three sentences of plain prose")],
        check,
    )


def title(topic: str, keywords: tuple[str, ...]) -> Case:
    def check(out: dict[str, Any]) -> str | None:
        text = out["title"]
        n = len(words(text))
        if not 1 <= n <= 12 or "\n" in text:
            return f"{n} words"
        if not mentions(text, keywords):
            return "off topic"
        return None

    return Case(
        "title",
        f"Give a catchy title for a blog post about {topic}.",
        [("title", "str", "the title of the blog post")],
        check,
    )


def short_list(what: str, accepted: set[str], size: int = 3) -> Case:
    def check(out: dict[str, Any]) -> str | None:
        items = [norm(i) for i in out["items"]]
        if len(items) != size:
            return f"{len(items)} items"
        if len(set(items)) != size:
            return "repeated items"
        if any(not i or len(i.split()) > 3 for i in items):
            return "an item is empty or longer than 3 words"
        good = sum(1 for i in items if any(a in i for a in accepted))
        if good < size - 1:
            return f"only {good} right"
        return None

    return Case(
        "list",
        f"List {size} {what}.",
        [("items", "list[str]", f"{size} {what}, one or two words each")],
        check,
        {"items": {"min_items": size, "max_items": size}},
    )


def exact(shape: str, prompt: str, fields: list[tuple[str, str, str]], **want: Any) -> Case:
    def check(out: dict[str, Any]) -> str | None:
        for name, expected in want.items():
            got = out[name]
            if isinstance(expected, set):
                if {norm(g) for g in got} != expected:
                    return f"{name}={got!r}"
            elif isinstance(expected, str):
                if norm(got) != norm(expected):
                    return f"{name}={got!r}"
            elif isinstance(expected, bool):
                if got is not expected:
                    return f"{name}={got!r}"
            elif got != expected:
                return f"{name}={got!r}"
        return None

    return Case(shape, prompt, fields, check)


def number(question: str, answer: int) -> Case:
    return exact("number", question, [("answer", "int", "the number")], answer=answer)


def yes_no(question: str, answer: bool) -> Case:
    return exact(
        "yes/no", question, [("answer", "bool", "true for yes, false for no")], answer=answer
    )


CASES: list[Case] = [
    paragraph("volcanoes", ("volcan", "lava", "magma", "erupt")),
    paragraph("honey bees", ("bee", "honey", "hive")),
    paragraph("the moon", ("moon", "lunar")),
    paragraph("bicycles", ("bicycl", "bike", "cycl")),
    paragraph("rainforests", ("rainforest", "forest", "jungle")),
    paragraph("coffee", ("coffee", "caffeine", "bean")),
    title("growing tomatoes", ("tomato", "garden", "grow")),
    title("learning to swim", ("swim", "water", "pool")),
    title("saving money", ("money", "sav", "budget", "financ")),
    title("the history of chess", ("chess",)),
    title("baking bread", ("bread", "bak", "loaf", "dough")),
    title("camping in the mountains", ("camp", "mountain", "hik", "outdoor", "tent")),
    short_list("primary colors", {"red", "blue", "yellow", "green"}),
    short_list(
        "fruits",
        {
            "apple",
            "banana",
            "orange",
            "grape",
            "pear",
            "mango",
            "cherry",
            "berry",
            "peach",
            "lemon",
            "pineapple",
            "kiwi",
            "plum",
            "melon",
            "lime",
        },
    ),
    short_list(
        "animals that live in the ocean",
        {
            "fish",
            "shark",
            "whale",
            "dolphin",
            "octopus",
            "crab",
            "seal",
            "jellyfish",
            "squid",
            "turtle",
            "starfish",
            "eel",
            "ray",
            "lobster",
            "coral",
            "shrimp",
            "sea",
        },
    ),
    short_list(
        "planets of the solar system",
        {"mercury", "venus", "earth", "mars", "jupiter", "saturn", "uranus", "neptune"},
    ),
    short_list(
        "musical instruments",
        {
            "piano",
            "guitar",
            "violin",
            "drum",
            "flute",
            "trumpet",
            "cello",
            "saxophone",
            "clarinet",
            "harp",
            "bass",
            "ukulele",
            "organ",
            "keyboard",
            "trombone",
            "banjo",
        },
    ),
    short_list(
        "countries in Europe",
        {
            "france",
            "germany",
            "spain",
            "italy",
            "portugal",
            "poland",
            "greece",
            "sweden",
            "norway",
            "england",
            "united kingdom",
            "uk",
            "ireland",
            "netherlands",
            "belgium",
            "austria",
            "switzerland",
            "denmark",
            "finland",
        },
    ),
    number("How many legs does a spider have?", 8),
    number("How many days are in a week?", 7),
    number("What is 12 plus 5?", 17),
    number("How many months are in a year?", 12),
    number("How many sides does a triangle have?", 3),
    number("How many hours are in a day?", 24),
    yes_no("Is the sun a star?", True),
    yes_no("Is Paris the capital of Germany?", False),
    yes_no("Is ice made of frozen water?", True),
    yes_no("Do cats have wings?", False),
    yes_no("Is ten greater than three?", True),
    yes_no("Is the Sahara an ocean?", False),
    exact(
        "extraction",
        "Text: Maria Lopez moved to Lisbon in 2019 to work as a nurse.\n"
        "Which city did she move to?",
        [("city", "str", "the city named in the text")],
        city="Lisbon",
    ),
    exact(
        "extraction",
        "Text: Maria Lopez moved to Lisbon in 2019 to work as a nurse.\n"
        "In which year did she move?",
        [("year", "int", "the year named in the text")],
        year=2019,
    ),
    exact(
        "extraction",
        "Text: Tom Baker, 42, is a carpenter from Leeds.\nWho is the text about, and how old "
        "is he?",
        [("name", "str", "the person's full name"), ("age", "int", "the person's age")],
        name="Tom Baker",
        age=42,
    ),
    exact(
        "extraction",
        "Text: The blue kettle costs 24.50 euros and ships in two days.\n"
        "What does the kettle cost?",
        [("price", "float", "the price in euros, a number")],
        price=24.5,
    ),
    exact(
        "extraction",
        "Text: For the pancakes you need flour, milk and eggs.\nWhat are the ingredients?",
        [("ingredients", "list[str]", "the ingredients named in the text")],
        ingredients={"flour", "milk", "eggs"},
    ),
    exact(
        "extraction",
        "Text: The meeting with Anna Schmidt is on Friday at the Berlin office.\n"
        "On which day is the meeting?",
        [("day", "str", "the day of the week named in the text")],
        day="Friday",
    ),
]
SHAPES = ["paragraph", "title", "list", "number", "yes/no", "extraction"]
