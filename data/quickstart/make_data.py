"""Writes the quickstart dataset: short English sentences about one of four topics.

The sentences are written for lorakit (not taken from any dataset): each topic has a list of openings
and a list of endings, and a sentence is one opening joined to one ending. All combinations are
shuffled with a fixed seed and split into train.tsv (100 per topic) and dev.tsv (30 per topic), so the
dev sentences are combinations never seen in training. Run from the repository root:

    python data/quickstart/make_data.py
"""

from __future__ import annotations

import random
from pathlib import Path

TOPICS: dict[str, tuple[list[str], list[str]]] = {
    "weather": (
        [
            "By noon the sky over the harbour", "The forecast for the weekend", "Up in the hills the wind",
            "After a week of drizzle the air", "This morning the clouds", "Late in the afternoon the storm",
            "Along the coast the fog", "The temperature at dawn", "Over the valley the thunder",
            "The first frost of the year", "A warm front from the south", "Every evening the breeze",
            "The snow on the pass", "Heavy rain in the north",
        ],
        [
            "turned grey and cold.", "promised sunshine and light showers.", "kept the umbrellas busy.",
            "brought a sudden hailstorm.", "cleared up before lunch.", "made the roads icy and slick.",
            "dropped below freezing overnight.", "rolled in with dark clouds.", "felt humid and heavy.",
            "left puddles on every street.", "was mild for the season.", "lifted by the early evening.",
        ],
    ),
    "food": (
        [
            "The soup at the corner bistro", "My grandmother's apple pie", "The fresh bread from the bakery",
            "A bowl of spicy ramen", "The roasted vegetables", "Her homemade lemon cake",
            "The grilled fish with herbs", "A plate of creamy pasta", "The cheese from the market",
            "His curry with coconut milk", "The chocolate pudding", "A salad of tomatoes and basil",
            "The pancakes with maple syrup", "The stew that simmered all day",
        ],
        [
            "tasted of garlic and butter.", "was far too salty.", "melted on the tongue.",
            "needed a pinch more pepper.", "smelled wonderful from the kitchen.", "was served warm with rice.",
            "came out of the oven golden brown.", "was sweet and a little sour.", "filled everyone at the table.",
            "went well with a glass of wine.", "was crisp on the outside and soft inside.",
            "had a rich and smoky flavour.",
        ],
    ),
    "sport": (
        [
            "The home team's striker", "In the final set the champion", "The young sprinter",
            "Our goalkeeper", "The visiting cyclists", "In the second half the defenders",
            "The marathon runners", "The captain of the rugby side", "The tennis player from Spain",
            "At the swimming pool the relay team", "The basketball coach", "The veteran boxer",
            "The skiers on the downhill course", "The cricket batsman",
        ],
        [
            "scored twice before half time.", "won the match in straight sets.", "broke the national record.",
            "saved a penalty in the last minute.", "trained hard for the championship.",
            "lost the game after extra time.", "crossed the finish line first.",
            "celebrated the victory with the fans.", "was shown a red card by the referee.",
            "climbed to the top of the league table.", "kept a clean sheet all season.",
            "needed a late goal to draw.",
        ],
    ),
    "technology": (
        [
            "The new smartphone", "The latest software update", "Our office laptop",
            "The cloud storage service", "The home wifi router", "The open source compiler",
            "The company's new database", "The tablet's operating system", "The graphics card",
            "The mobile banking app", "The web browser", "The solid state drive",
            "The voice assistant", "The battery of the electric car",
        ],
        [
            "crashed after the reboot.", "installed a security patch overnight.",
            "runs twice as fast with more memory.", "synced the files to the server.",
            "needs a firmware upgrade.", "lost the connection to the network.",
            "encrypts every message by default.", "shipped with a faster processor.",
            "stores the data in the cloud.", "uses less power than the old model.",
            "reported a bug in the login screen.", "downloads updates in the background.",
        ],
    ),
}

TRAIN_PER_TOPIC, DEV_PER_TOPIC = 100, 30


def main() -> None:
    rng = random.Random(1234)
    train, dev = [], []
    for label, (openings, endings) in TOPICS.items():
        combos = [f"{o} {e}" for o in openings for e in endings]
        rng.shuffle(combos)
        train += [(s, label) for s in combos[:TRAIN_PER_TOPIC]]
        dev += [(s, label) for s in combos[TRAIN_PER_TOPIC: TRAIN_PER_TOPIC + DEV_PER_TOPIC]]
    rng.shuffle(train)
    rng.shuffle(dev)
    here = Path(__file__).resolve().parent
    for name, rows in (("train.tsv", train), ("dev.tsv", dev)):
        lines = ["sentence\tlabel"] + [f"{s}\t{label}" for s, label in rows]
        (here / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        print(f"wrote {here / name}: {len(rows)} examples")


if __name__ == "__main__":
    main()
