"""Writes ``topics.csv``: 3,000 short texts in four topics, for the training module's tests.

Deterministic (a fixed seed): ``python compute/assets/make_topics.py`` writes the
same file the repository holds. Each text has a topic's words and, one in
three, words of another topic too, so a classifier has to weigh them; one in
twenty is labelled by its second topic (label noise), so no model reaches 100 %.
"""

from __future__ import annotations

import csv
import random
from pathlib import Path

TOPICS = {
    "sport": (["the striker", "our goalkeeper", "the coach", "the home team", "a young sprinter",
               "the referee", "the captain", "the cyclist"],
              ["scored twice in", "trained hard before", "was injured during", "celebrated after",
               "lost narrowly in", "was sent off in", "won the title at", "prepared for"],
              ["the final", "the derby", "the marathon", "the second half", "the league match",
               "the relay race", "the tournament", "extra time"]),
    "cooking": (["the chef", "my grandmother", "a home cook", "the baker", "our neighbour",
                 "the pastry cook", "the caterer", "a food writer"],
                ["simmered", "roasted", "seasoned", "baked", "whisked", "marinated", "grilled",
                 "kneaded"],
                ["the onions with garlic", "a loaf of sourdough", "the tomato sauce",
                 "fresh pasta dough", "the lemon tart", "a pot of lentil soup",
                 "the chicken with herbs", "a tray of cinnamon buns"]),
    "weather": (["a cold front", "the storm", "heavy rain", "the heatwave", "thick fog",
                 "a gust of wind", "the forecast", "light snow"],
                ["is expected to reach", "swept across", "will linger over", "flooded",
                 "brought frost to", "cleared from", "moved slowly towards", "battered"],
                ["the coast tonight", "the northern hills", "the valley by morning",
                 "the low-lying fields", "the city on Sunday", "the mountain passes",
                 "the harbour", "the plains this weekend"]),
    "tech": (["the new laptop", "a software update", "the startup", "our server",
              "the chip maker", "the mobile app", "the database", "an open-source library"],
             ["crashed after", "shipped with", "was patched to fix", "doubled the speed of",
              "leaked data through", "added support for", "was rewritten to avoid",
              "now encrypts"],
             ["a memory leak", "the login page", "faster graphics drivers", "the cloud backup",
              "a security flaw", "the battery manager", "the search index",
              "the network stack"]),
}
EXTRA = ["yesterday", "again", "this season", "as usual", "for the first time", "at last",
         "once more", "late in the evening"]


def sentence(rng: random.Random, topic: str) -> str:
    subjects, verbs, objects = TOPICS[topic]
    return f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}"


def make(count: int = 3000, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for _ in range(count):
        topic = rng.choice(names)
        text = sentence(rng, topic)
        label = topic
        if rng.random() < 1 / 3:
            other = rng.choice([n for n in names if n != topic])
            words = sentence(rng, other).split()
            text += ", while " + " ".join(words[: len(words) // 2])
            if rng.random() < 0.15:
                label = other
        text = f"{text} {rng.choice(EXTRA)}".capitalize()
        rows.append((text, label))
    return rows


def main() -> None:
    path = Path(__file__).with_name("topics.csv")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(make())


if __name__ == "__main__":
    main()
