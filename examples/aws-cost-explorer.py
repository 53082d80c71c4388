#!/usr/bin/env python3
"""Turn AWS Cost Explorer output into Deckhand's cost records (JSON lines).

Deckhand's cost sources print one JSON object per line:
    {"date": "2026-11-24", "service": "Amazon EC2", "amount": 12.34, "currency": "USD"}

Two ways to use this script (Python 3.8+, standard library only):

1. Convert output you already have, on stdin:
       aws ce get-cost-and-usage \
         --time-period Start=2026-09-25,End=2026-11-25 \
         --granularity DAILY --metrics UnblendedCost \
         --group-by Type=DIMENSION,Key=SERVICE > ce.json
       python3 aws-cost-explorer.py < ce.json

2. As the step of a Deckhand command (see aws-cost.toml.example): with --fetch it runs
   `aws ce get-cost-and-usage` itself for the last --days days (default 60), following
   NextPageToken, and converts the result. Steps run without a shell, so the pipe of (1)
   is not available there; this is why the script can fetch.

Options: --metric NAME picks the metric when several were requested (default: the first
of UnblendedCost, NetUnblendedCost, AmortizedCost, BlendedCost present). Days whose
amount is zero are left out. Exit status 2 on input that is not Cost Explorer JSON.
"""

import argparse
import datetime
import json
import subprocess
import sys

PREFERRED = ("UnblendedCost", "NetUnblendedCost", "AmortizedCost", "BlendedCost")


def records(answer, metric=None):
    """Yield (date, service, amount, currency) from one get-cost-and-usage answer."""
    for period in answer.get("ResultsByTime", []):
        date = period["TimePeriod"]["Start"][:10]
        groups = period.get("Groups") or []
        if not groups and period.get("Total"):
            # Not grouped by service: one record for the whole account.
            groups = [{"Keys": ["Total"], "Metrics": period["Total"]}]
        for group in groups:
            metrics = group.get("Metrics", {})
            name = metric or next((m for m in PREFERRED if m in metrics), None)
            if name is None and metrics:
                name = sorted(metrics)[0]
            if name not in metrics:
                continue
            value = metrics[name]
            amount = float(value.get("Amount", "0"))
            if amount == 0.0:
                continue
            service = " / ".join(group.get("Keys") or ["(unknown)"])
            yield date, service, amount, value.get("Unit", "USD")


def fetch(days, metric):
    """Run the AWS CLI for the last `days` days; return every page's answer."""
    end = datetime.date.today()
    start = end - datetime.timedelta(days=days)
    argv = [
        "aws", "ce", "get-cost-and-usage",
        "--time-period", f"Start={start.isoformat()},End={end.isoformat()}",
        "--granularity", "DAILY",
        "--metrics", metric or "UnblendedCost",
        "--group-by", "Type=DIMENSION,Key=SERVICE",
        "--output", "json",
    ]
    pages, token = [], None
    while True:
        cmd = argv + (["--next-page-token", token] if token else [])
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        page = json.loads(out)
        pages.append(page)
        token = page.get("NextPageToken")
        if not token:
            return pages


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fetch", action="store_true", help="run `aws ce get-cost-and-usage` instead of reading stdin")
    p.add_argument("--days", type=int, default=60, help="with --fetch: how many days back (default 60)")
    p.add_argument("--metric", help="metric to report, e.g. UnblendedCost")
    args = p.parse_args()
    try:
        if args.fetch:
            pages = fetch(args.days, args.metric)
        else:
            pages = [json.load(sys.stdin)]
    except subprocess.CalledProcessError as e:
        print(f"aws ce get-cost-and-usage failed: {e.stderr.strip()}", file=sys.stderr)
        return 1
    except (json.JSONDecodeError, ValueError) as e:
        print(f"not Cost Explorer JSON: {e}", file=sys.stderr)
        return 2
    try:
        for page in pages:
            for date, service, amount, unit in records(page, args.metric):
                print(json.dumps({"date": date, "service": service, "amount": round(amount, 4), "currency": unit}))
    except (KeyError, TypeError, AttributeError) as e:
        print(f"not Cost Explorer JSON (missing {e})", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
