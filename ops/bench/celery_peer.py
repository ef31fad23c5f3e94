"""Celery 5, the peer in renderfleet's benchmark, on the same RabbitMQ and PostgreSQL.

Configured fairly: late acks, prefetch multiplier 1, publisher confirms, a PostgreSQL result
backend (SQLAlchemy), one prefork worker with two processes. Workloads mirror renderfleet's:
independent no-op tasks published first and then drained, a chain (per-hop latency from
the tasks' own timestamps), and a group with a chord callback (the database backend makes
the chord poll with `chord_unlock`, which is how Celery waits there).

Run by `target/release/bench`; prints one JSON object on stdout. Environment:
BENCH_BACKEND (db+postgresql://...), BENCH_PG (postgresql://... for direct reads),
BENCH_QUEUE, BENCH_BROKER, and the sizes as arguments.
"""
import argparse
import json
import os
import pickle
import statistics
import subprocess
import sys
import time
from datetime import timezone

import celery
import psycopg2
from celery import Celery, chain, chord

QUEUE = os.environ.get("BENCH_QUEUE", "rf-bench-celery")
app = Celery("celery_peer")
app.conf.update(
    broker_url=os.environ.get("BENCH_BROKER", "amqp://guest:guest@127.0.0.1:5672//"),
    result_backend=os.environ.get("BENCH_BACKEND", "db+postgresql://postgres@127.0.0.1:5432/postgres"),
    task_default_queue=QUEUE,
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"confirm_publish": True},
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="noop")
def noop(*_args):
    t = time.time()
    return {"start": t, "end": time.time()}


def quantile(xs, q):
    xs = sorted(xs)
    i = max(1, min(len(xs), int(-(-q * len(xs) // 1)))) - 1
    return xs[i]


def start_worker():
    here = os.path.dirname(os.path.abspath(__file__))
    cmd = [sys.executable, "-m", "celery", "-A", "celery_peer", "worker", "--pool=prefork", "--concurrency=2",
           "-Q", QUEUE, "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    return subprocess.Popen(cmd, cwd=here, env=os.environ.copy(), stdout=subprocess.DEVNULL, stderr=sys.stderr)


def succeeded(cur):
    cur.execute("SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")
    return cur.fetchone()[0]


def independent(n, pg):
    """Publish n tasks with no worker running, then drain them with one fresh worker."""
    with pg.cursor() as cur:
        cur.execute("DELETE FROM celery_taskmeta")
    pg.commit()
    ids = [noop.apply_async().id for _ in range(n)]
    worker = start_worker()
    try:
        with pg.cursor() as cur:
            deadline = time.time() + 1200
            while succeeded(cur) < n:
                pg.commit()
                if time.time() > deadline:
                    raise SystemExit("celery: timed out draining independent tasks")
                time.sleep(0.2)
            cur.execute("SELECT result, date_done FROM celery_taskmeta WHERE task_id = ANY(%s)", (ids,))
            rows = cur.fetchall()
        pg.commit()
    finally:
        worker.terminate()
        worker.wait()
    first = min(decode(r[0])["start"] for r in rows)
    last = max(r[1].replace(tzinfo=timezone.utc).timestamp() for r in rows)
    return n / (last - first)


def decode(raw):
    """The database backend keeps results in a PickleType column around the serialized value."""
    value = pickle.loads(bytes(raw))
    return json.loads(value) if isinstance(value, (bytes, str)) else value


def hops(length):
    res = chain(*[noop.si() for _ in range(length)]).apply_async()
    res.get(timeout=600)
    results = []
    node = res
    while node is not None:
        results.append(node.get(timeout=60))
        node = node.parent
    results.reverse()
    return [(b["start"] - a["end"]) * 1e3 for a, b in zip(results, results[1:])]


def chord_rate(k):
    t = time.time()
    r = chord([noop.si() for _ in range(k)])(noop.si())
    r.get(timeout=600)
    return (k + 1) / (time.time() - t)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--tasks", type=int, required=True)
    p.add_argument("--chain", type=int, required=True)
    p.add_argument("--chord", type=int, required=True)
    p.add_argument("--repeats", type=int, default=1)
    a = p.parse_args()
    pg = psycopg2.connect(os.environ["BENCH_PG"])
    # One task first, so the backend's tables exist before the first measurement.
    warm = start_worker()
    try:
        noop.delay().get(timeout=120)
    finally:
        warm.terminate()
        warm.wait()
    rates = [independent(a.tasks, pg) for _ in range(a.repeats)]
    worker = start_worker()
    try:
        noop.delay().get(timeout=120)
        p50s, p99s, chords = [], [], []
        for _ in range(a.repeats):
            h = hops(a.chain)
            p50s.append(quantile(h, 0.5))
            p99s.append(quantile(h, 0.99))
            chords.append(chord_rate(a.chord))
    finally:
        worker.terminate()
        worker.wait()
        # Celery declared a queue and a direct exchange of that name: leave nothing behind.
        with app.connection_for_write() as conn:
            conn.default_channel.queue_delete(QUEUE)
            conn.default_channel.exchange_delete(QUEUE)
    print(json.dumps({
        "version": celery.__version__,
        "independent_tasks": a.tasks,
        "independent_per_s": statistics.median(rates),
        "chain_len": a.chain,
        "hop_p50_ms": statistics.median(p50s),
        "hop_p99_ms": statistics.median(p99s),
        "chord_size": a.chord,
        "chord_per_s": statistics.median(chords),
    }))


if __name__ == "__main__":
    main()
