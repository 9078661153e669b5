"""Write the bundled demo task: which group (fish / bird / mammal / reptile) an animal belongs to.

A task a tiny from-scratch T5 can learn in about a minute on a CPU: the label depends only on the
animal named in the question, and each example has a reference rationale that names the features
that decide the group ("A salmon has fins and gills and lives in water, so it is a fish."), so
distilling step-by-step has something real to learn from even with a random tiny teacher.

Train questions use one set of phrasings; validation and test use phrasings never seen in
training, with fresh choice orders, over the same animals. Deterministic: run it again and the
files are byte-for-byte the same.

    python examples/demo/make_demo.py            # writes train/validation/test.jsonl beside this file
"""

from __future__ import annotations

import json
import random
from pathlib import Path

SEED = 0
SIZES = {"train": 600, "validation": 100, "test": 100}

ANIMALS = {
    "fish": ["salmon", "trout", "tuna", "shark", "goldfish", "cod", "carp", "herring"],
    "bird": ["eagle", "sparrow", "penguin", "owl", "parrot", "robin", "ostrich", "duck"],
    "mammal": ["dog", "whale", "bat", "horse", "tiger", "rabbit", "dolphin", "elephant"],
    "reptile": ["lizard", "snake", "turtle", "crocodile", "iguana", "gecko", "alligator", "tortoise"],
}
FEATURES = {
    "fish": ["has fins and gills and lives in water", "breathes with gills and swims with fins"],
    "bird": ["has feathers and wings and lays eggs", "is covered in feathers and has a beak"],
    "mammal": ["has hair and feeds its young with milk", "breathes air and nurses its babies with milk"],
    "reptile": ["has dry scales and is cold-blooded", "is cold-blooded and covered in scales"],
}
RATIONALES = [
    "{A} {animal} {feature}, so it is a {group}.",
    "The {animal} {feature}. Animals like that are {groups}.",
    "{A} {animal} {feature}, and that is what a {group} is.",
]
TRAIN_QUESTIONS = [
    "Which group does the {animal} belong to?",
    "What kind of animal is {a} {animal}?",
    "The {animal} is an example of which group?",
    "Into which group would you put the {animal}?",
    "{A} {animal} is best described as which kind of animal?",
    "Scientists put the {animal} in which group?",
    "Pick the group of the {animal}.",
    "Which kind of animal is the {animal}?",
]
HELD_OUT_QUESTIONS = [
    "What type of creature is the {animal}?",
    "Which animal class includes the {animal}?",
    "Name the group that the {animal} is part of.",
]
PLURAL = {"fish": "fish", "bird": "birds", "mammal": "mammals", "reptile": "reptiles"}


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_example(rng: random.Random, templates: list[str], index: int, split: str) -> dict:
    group = rng.choice(sorted(ANIMALS))
    animal = rng.choice(ANIMALS[group])
    others = [g for g in sorted(ANIMALS) if g != group]
    choices = [group, *rng.sample(others, rng.choice([2, 3]))]
    rng.shuffle(choices)
    a = article(animal)
    question = rng.choice(templates).format(animal=animal, a=a, A=a.capitalize())
    lines = [f"({chr(ord('a') + i)}) {choice}" for i, choice in enumerate(choices)]
    rationale = rng.choice(RATIONALES).format(
        A=a.capitalize(), animal=animal, feature=rng.choice(FEATURES[group]), group=group,
        groups=PLURAL[group])
    return {
        "id": f"demo-{split}-{index:04d}",
        "input": f"{question}\nAnswer Choices:\n" + "\n".join(lines),
        "label": group,
        "rationale": rationale,
    }


def main(out_dir: Path = Path(__file__).resolve().parent) -> None:
    rng = random.Random(SEED)
    for split, size in SIZES.items():
        templates = TRAIN_QUESTIONS if split == "train" else HELD_OUT_QUESTIONS
        rows = [make_example(rng, templates, i, split) for i in range(size)]
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{split}: {len(rows)} examples -> {out_dir / f'{split}.jsonl'}")


if __name__ == "__main__":
    main()
