"""A wall-time note for a run's card from its log.jsonl: which epochs shared the cores with
other work (slower than 70 % of the run's fastest epoch) and what the idle ones took.
Usage: python scripts/contention_note.py runs/<name>/log.jsonl [checkpoints/<name>.json]
prints the note and, given a card, stores it there as recipe.wall_time_note."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1])]
seconds, previous = [], 0.0
for row in rows:
    seconds.append(row["elapsed_s"] - previous)
    previous = row["elapsed_s"]
fastest = max(r["img_per_s"] for r in rows)
busy = [r["epoch"] for r in rows if r["img_per_s"] < 0.7 * fastest]
idle = [s for r, s in zip(rows, seconds) if r["img_per_s"] >= 0.7 * fastest]
if not busy:
    sys.exit(0)
rates = [r["img_per_s"] for r in rows if r["epoch"] in busy]
which = f"epoch {busy[0]}" if len(busy) == 1 else f"epochs {', '.join(map(str, busy))}"
rate = f"{min(rates):.0f}" if len(rates) == 1 else f"{min(rates):.0f}-{max(rates):.0f}"
note = (f"wall_time_s includes CPU contention: in {which} other work shared the "
      f"2 cores ({rate} img/s); the {len(idle)} epochs on idle cores took "
      f"{min(idle):.0f}-{max(idle):.0f} s each ({sum(idle) / len(idle) * len(rows) / 60:.0f} min for "
      f"{len(rows)} epochs at that pace; from log.jsonl).")
print(note)
if len(sys.argv) > 2:
    with open(sys.argv[2]) as f:
        card = json.load(f)
    card["recipe"]["wall_time_note"] = note
    with open(sys.argv[2], "w") as f:
        f.write(json.dumps(card, indent=2) + "\n")
