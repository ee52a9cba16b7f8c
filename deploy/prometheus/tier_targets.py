#!/usr/bin/env python3
"""Writes the per-tier SLO target recording rules for a tier file (router/tiers.h format).

    tier_targets.py TIERS.json > tier-targets.yml

Each tier's ttft_target_ms / itl_target_ms becomes tier:gka_ttft_seconds:target /
tier:gka_itl_seconds:target{tier="..."} in seconds, which the TTFT/ITL alerts compare the
tier's p99 with. The Helm chart renders the same group from its `tiers` value
(templates/_helpers.tpl, "gkaserve.tierTargetGroup"); tests/deploy keeps the two equal.
With no argument, the router's built-in tiers (no targets) give an empty group.
"""
import json
import sys

TARGETS = (("ttft_target_ms", "tier:gka_ttft_seconds:target"),
           ("itl_target_ms", "tier:gka_itl_seconds:target"))


def target_group(tier_file: dict) -> dict:
    rules = []
    for tier in tier_file.get("tiers", []):
        for field, record in TARGETS:
            if field in tier:
                rules.append({"record": record,
                              "expr": f"vector({tier[field] / 1000.0:g})",
                              "labels": {"tier": tier["name"]}})
    return {"name": "gkaserve-tier-targets", "rules": rules}


def main() -> int:
    tiers = {}
    if len(sys.argv) > 1:
        with open(sys.argv[1]) as f:
            tiers = json.load(f)
    # JSON is YAML: the output needs no YAML library.
    json.dump({"groups": [target_group(tiers)]}, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
