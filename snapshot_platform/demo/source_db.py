"""The demo's "production database": customers in SQLite, changing between runs.

``create`` makes a week of signups; ``evolve`` moves the database on the way production does:
new customers sign up on the last day, and some existing customers' churn labels and purchase
totals change, so an earlier partition's query returns different rows than before.
"""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
from pathlib import Path

FIRST_DAY = dt.date(2024, 1, 1)
DAYS = 7
PER_DAY = 400
COUNTRIES = ("DE", "FI", "FR", "NL", "SE", "US")

SCHEMA = """
CREATE TABLE customers (
    customer_id     INTEGER PRIMARY KEY,
    signup_date     DATE NOT NULL,
    country         TEXT NOT NULL,
    total_purchases INTEGER NOT NULL,
    avg_order_value REAL NOT NULL,
    tenure_days     INTEGER NOT NULL,
    churn_label     INTEGER NOT NULL
);
CREATE INDEX customers_signup ON customers (signup_date);
CREATE TABLE demo_state (generation INTEGER NOT NULL);
"""


def _customer(rng: random.Random, customer_id: int, day: dt.date) -> tuple:
    purchases = rng.randint(0, 40)
    tenure = (FIRST_DAY + dt.timedelta(days=DAYS + 30) - day).days + rng.randint(0, 400)
    aov = round(rng.uniform(5, 250), 2)
    # churn is likelier for customers who buy little and joined recently: something to learn
    p = 0.65 - 0.012 * purchases - 0.0006 * tenure + rng.uniform(-0.15, 0.15)
    return (customer_id, day.isoformat(), rng.choice(COUNTRIES), purchases, aov, tenure, int(p > 0.3))


def create(path: Path, seed: int = 7) -> None:
    """A fresh database with ``DAYS`` days of signups (replaces nothing: fails if it exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        raise FileExistsError(path)
    rng = random.Random(seed)
    conn = sqlite3.connect(path)
    try:
        conn.executescript(SCHEMA)
        conn.execute("PRAGMA journal_mode = WAL")
        rows, cid = [], 1
        for d in range(DAYS):
            day = FIRST_DAY + dt.timedelta(days=d)
            for _ in range(PER_DAY + rng.randint(-40, 40)):
                rows.append(_customer(rng, cid, day))
                cid += 1
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("INSERT INTO demo_state VALUES (0)")
        conn.commit()
    finally:
        conn.close()


def evolve(path: Path, changed_day: dt.date = FIRST_DAY + dt.timedelta(days=1),
           signup_day: dt.date = FIRST_DAY + dt.timedelta(days=DAYS - 1)) -> dict[str, int]:
    """Change the database: churn labels flip on ``changed_day``, new customers sign up on ``signup_day``."""
    conn = sqlite3.connect(path)
    try:
        (generation,) = conn.execute("SELECT generation FROM demo_state").fetchone()
        generation += 1
        rng = random.Random(1000 + generation)
        ids = [r[0] for r in conn.execute(
            "SELECT customer_id FROM customers WHERE signup_date = ? ORDER BY customer_id",
            (changed_day.isoformat(),))]
        flipped = rng.sample(ids, k=max(1, len(ids) // 10))
        conn.executemany(
            "UPDATE customers SET churn_label = 1 - churn_label, total_purchases = total_purchases + 1 "
            "WHERE customer_id = ?", [(i,) for i in flipped])
        (max_id,) = conn.execute("SELECT max(customer_id) FROM customers").fetchone()
        new = [_customer(rng, max_id + 1 + i, signup_day) for i in range(rng.randint(40, 80))]
        conn.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?, ?, ?)", new)
        conn.execute("UPDATE demo_state SET generation = ?", (generation,))
        conn.commit()
        return {"generation": generation, "labels_changed": len(flipped), "new_signups": len(new)}
    finally:
        conn.close()
