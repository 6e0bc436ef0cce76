"""The license-clean English corpus: a seeded template grammar, written to corpus/*.txt."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, List

from optmodel.tinybuild.constants import HELDOUT_BYTES, HELDOUT_SEED, TRAIN_BYTES, TRAIN_SEED


PEOPLE = {
    "Anna": "she", "Ben": "he", "Clara": "she", "David": "he", "Emma": "she", "Finn": "he",
    "Grace": "she", "Henry": "he", "Ivy": "she", "Jack": "he", "Kate": "she", "Leo": "he",
    "Mia": "she", "Noah": "he", "Olivia": "she", "Paul": "he", "Rosa": "she", "Sam": "he",
    "Tina": "she", "Victor": "he", "Wendy": "she", "Omar": "he", "Lucy": "she", "Max": "he",
}
POSSESSIVE = {"he": "his", "she": "her"}
OBJECT_PRONOUN = {"he": "him", "she": "her"}
ANIMALS = ["cat", "dog", "bird", "fox", "rabbit", "horse", "cow", "duck", "frog", "mouse",
           "bear", "goat", "sheep", "owl", "fish", "pig"]
ANIMAL_SOUNDS = {"cat": "meows", "dog": "barks", "bird": "sings", "fox": "yelps",
                 "rabbit": "is quiet", "horse": "neighs", "cow": "moos", "duck": "quacks",
                 "frog": "croaks", "mouse": "squeaks", "bear": "growls", "goat": "bleats",
                 "sheep": "bleats", "owl": "hoots", "fish": "is quiet", "pig": "oinks"}
PLACES = ["garden", "park", "kitchen", "forest", "river", "school", "market", "library",
          "beach", "farm", "village", "hill", "station", "bakery", "lake", "field"]
OBJECTS = ["ball", "book", "cup", "hat", "box", "kite", "apple", "lamp", "chair", "key",
           "bag", "boat", "coat", "pencil", "basket", "bell", "shoe", "flower"]
COLOURS = ["red", "blue", "green", "yellow", "white", "black", "brown", "orange", "purple",
           "grey", "pink"]
SIZES = ["big", "small", "old", "new", "little", "heavy", "light"]
FEELINGS = ["happy", "sad", "tired", "hungry", "sleepy", "excited", "calm", "cold"]
WEATHER = ["sunny", "rainy", "cloudy", "windy", "cold", "warm", "foggy", "snowy"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TIMES = ["morning", "afternoon", "evening", "night"]
SEASONS = ["spring", "summer", "autumn", "winter"]
FOODS = ["bread", "soup", "rice", "cake", "cheese", "apples", "carrots", "eggs", "milk"]
NUMBER_WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine", "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen",
                "sixteen", "seventeen", "eighteen", "nineteen", "twenty"]
TENS = {2: "twenty", 3: "thirty", 4: "forty"}
FACTS = [
    "the sky is blue on a clear day", "grass is green", "snow is white", "the sun is hot",
    "fish live in water", "birds can fly", "a week has seven days", "ice is cold",
    "a cat has four legs", "a bird has two legs", "the moon shines at night",
    "bees make honey", "cows give milk", "trees grow from seeds", "rain falls from clouds",
]


def number_word(n: int) -> str:
    """English words for 0..49 ("thirty-seven")."""
    if n <= 20:
        return NUMBER_WORDS[n]
    tens, ones = divmod(n, 10)
    return TENS[tens] if ones == 0 else f"{TENS[tens]}-{NUMBER_WORDS[ones]}"


def _cap(sentence: str) -> str:
    return sentence[0].upper() + sentence[1:]


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _plural(noun: str, n: int) -> str:
    if n == 1 or noun in ("fish", "sheep"):
        return noun
    if noun == "mouse":
        return "mice"
    if noun.endswith(("x", "sh", "ch")):
        return noun + "es"
    return noun + "s"


class _Grammar:
    """Paragraph generators of a small template grammar; every choice comes from ``rng``."""

    def __init__(self, rng: random.Random):
        self.rng = rng
        self.paragraph_kinds: List[Callable[[], List[str]]] = [
            self.story, self.story, self.story, self.arithmetic, self.counting_story,
            self.description, self.weather, self.dialogue, self.animals, self.facts,
        ]

    def pick(self, seq: Sequence):
        return self.rng.choice(seq)

    def person(self, exclude: Sequence[str] = ()) -> str:
        return self.pick([p for p in PEOPLE if p not in exclude])

    def thing(self) -> str:
        r = self.rng.random()
        obj = self.pick(OBJECTS)
        if r < 0.4:
            return f"{self.pick(COLOURS)} {obj}"
        if r < 0.6:
            return f"{self.pick(SIZES)} {obj}"
        return obj

    # -- paragraph kinds --------------------------------------------------------------

    def story(self) -> List[str]:
        rng = self.rng
        name = self.person()
        pron = PEOPLE[name]
        friend = self.person(exclude=[name])
        place, place2 = rng.sample(PLACES, 2)
        thing = self.thing()
        animal = self.pick(ANIMALS)
        openings = [
            f"On a {self.pick(WEATHER)} {self.pick(DAYS)}, {name} went to the {place}.",
            f"One {self.pick(TIMES)}, {name} walked to the {place}.",
            f"In the {self.pick(SEASONS)}, {name} lived near the {place}.",
            f"{name} was {self.pick(FEELINGS)} and went to the {place}.",
        ]
        middles = [
            f"{_cap(pron)} saw {_a(self.pick(COLOURS) + ' ' + animal)} near the {place2}.",
            f"There {pron} found {_a(thing)}.",
            f"{_cap(pron)} met {friend} at the {place}.",
            f"{friend} gave {OBJECT_PRONOUN[pron]} {_a(thing)}.",
            f"The {animal} was {self.pick(FEELINGS)}.",
            f"{_cap(pron)} ate some {self.pick(FOODS)}.",
            f"{name} and {friend} played with the {thing.split()[-1]}.",
            f"{_cap(pron)} put {POSSESSIVE[pron]} {thing} in the {self.pick(OBJECTS)}.",
            f"It started to rain, so {pron} went inside.",
            f"The {animal} ran to the {place2}.",
        ]
        endings = [
            f"Then {pron} walked home.",
            f"At night {pron} was {self.pick(FEELINGS)}.",
            f"{name} smiled.",
            f"Later {name} told {friend} about the {animal}.",
            f"It was a good day for {name}.",
        ]
        body = rng.sample(middles, rng.randint(1, 4))
        return [self.pick(openings), *body, self.pick(endings)]

    def arithmetic(self) -> List[str]:
        rng = self.rng
        out = []
        for _ in range(rng.randint(3, 6)):
            op = rng.random()
            if op < 0.45:
                a, b = rng.randint(0, 20), rng.randint(0, 20)
                s = f"{number_word(a)} plus {number_word(b)} is {number_word(a + b)}."
            elif op < 0.8:
                a = rng.randint(0, 20)
                b = rng.randint(0, a)
                s = f"{number_word(a)} minus {number_word(b)} is {number_word(a - b)}."
            else:
                a, b = rng.randint(0, 7), rng.randint(0, 7)
                s = f"{number_word(a)} times {number_word(b)} is {number_word(a * b)}."
            out.append(_cap(s))
        return out

    def counting_story(self) -> List[str]:
        rng = self.rng
        name = self.person()
        pron = PEOPLE[name]
        friend = self.person(exclude=[name])
        noun = self.pick(["apple", "ball", "book", "cup", "pencil", "flower", "egg", "shoe"])
        a, b = rng.randint(1, 12), rng.randint(1, 8)
        out = [f"{name} had {number_word(a)} {_plural(noun, a)}."]
        if rng.random() < 0.5:
            out.append(f"{friend} gave {OBJECT_PRONOUN[pron]} {number_word(b)} more.")
            out.append(f"Now {name} has {number_word(a + b)} {_plural(noun, a + b)}.")
        else:
            b = rng.randint(0, a)
            out.append(f"{_cap(pron)} gave {number_word(b)} to {friend}.")
            out.append(f"Now {name} has {number_word(a - b)} {_plural(noun, a - b)}.")
        if rng.random() < 0.5:
            out.append(f"{friend} counted them again.")
        return out

    def description(self) -> List[str]:
        rng = self.rng
        place = self.pick(PLACES)
        out = [f"The {place} is {self.pick(['quiet', 'busy', 'warm', 'cold', 'bright', 'dark', 'clean', 'big', 'small'])}."]
        for _ in range(rng.randint(2, 5)):
            n = rng.randint(1, 9)
            noun = self.pick(OBJECTS + ANIMALS)
            colour = self.pick(COLOURS)
            verb = "is" if n == 1 else "are"
            where = self.pick(["on the table", "by the door", "under the chair",
                               "near the window", "in the corner", "on the floor"])
            out.append(f"There {verb} {number_word(n)} {colour} {_plural(noun, n)} {where}.")
        return out

    def weather(self) -> List[str]:
        rng = self.rng
        place = self.pick(PLACES + ["town", "city"])
        w1, w2 = rng.sample(WEATHER, 2)
        t = rng.randint(0, 30)
        when = self.pick(["in the morning", "in the afternoon", "in the evening", "at night"])
        out = [f"Today the weather at the {place} is {w1}.",
               f"It is {number_word(t)} {'degree' if t == 1 else 'degrees'} {when}."]
        if rng.random() < 0.7:
            out.append(f"Tomorrow it will be {w2}.")
        if rng.random() < 0.6:
            d = self.pick(DAYS)
            out.append(f"On {d} it will be {self.pick(WEATHER)} again.")
        if w1 in ("rainy", "snowy", "cold", "windy"):
            who = self.person()
            out.append(f"{who} wore {POSSESSIVE[PEOPLE[who]]} {self.pick(COLOURS)} coat.")
        return out

    def dialogue(self) -> List[str]:
        rng = self.rng
        a = self.person()
        b = self.person(exclude=[a])
        thing = self.thing()
        place = self.pick(PLACES)
        out = [f'{a} asked {b}, "where is the {thing}?"',
               f'{b} said, "the {thing} is in the {place}."']
        if rng.random() < 0.6:
            x, y = rng.randint(0, 10), rng.randint(0, 10)
            out.append(f'{a} asked, "what is {number_word(x)} plus {number_word(y)}?"')
            out.append(f'{b} said, "{number_word(x)} plus {number_word(y)} is {number_word(x + y)}."')
        if rng.random() < 0.5:
            out.append(f'"Thank you," said {a}.')
        return out

    def animals(self) -> List[str]:
        rng = self.rng
        out = []
        for animal in rng.sample(ANIMALS, rng.randint(3, 5)):
            r = rng.random()
            if r < 0.4:
                out.append(f"The {animal} {ANIMAL_SOUNDS[animal]}.")
            elif r < 0.7:
                out.append(f"The {self.pick(COLOURS)} {animal} lives on the {self.pick(['farm', 'hill', 'river', 'field', 'lake'])}.")
            else:
                n = rng.randint(2, 9)
                out.append(f"{number_word(n).capitalize()} {_plural(animal, n)} sleep in the {self.pick(PLACES)}.")
        return out

    def facts(self) -> List[str]:
        rng = self.rng
        out = [_cap(f) + "." for f in rng.sample(FACTS, rng.randint(2, 3))]
        start = rng.randint(1, 12)
        length = rng.randint(3, 6)
        out.append(_cap(", ".join(number_word(i) for i in range(start, start + length))) + ".")
        if rng.random() < 0.5:
            i = rng.randint(0, 6)
            out.append(f"After {DAYS[i]} comes {DAYS[(i + 1) % 7]}.")
        return out

    def paragraph(self) -> str:
        return " ".join(self.pick(self.paragraph_kinds)())


def generate_corpus(seed: int, target_bytes: int) -> str:
    """Paragraphs from the template grammar, separated by blank lines, until ``target_bytes``."""
    grammar = _Grammar(random.Random(seed))
    paragraphs: List[str] = []
    size = 0
    while size < target_bytes:
        p = grammar.paragraph()
        paragraphs.append(p)
        size += len(p.encode()) + 2
    return "\n\n".join(paragraphs) + "\n"


def build_corpus(out: Path) -> None:
    corpus_dir = out / "corpus"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    for name, seed, size in (("train", TRAIN_SEED, TRAIN_BYTES), ("heldout", HELDOUT_SEED, HELDOUT_BYTES)):
        text = generate_corpus(seed, size)
        (corpus_dir / f"{name}.txt").write_text(text, encoding="utf-8")
        print(f"corpus/{name}.txt: {len(text.encode()) / 1024:.0f} KiB, {text.count(chr(10) + chr(10)) + 1} paragraphs")


