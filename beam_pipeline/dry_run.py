"""`imaginem run … --dry-run`: what the API steps would send, before anything is sent."""

from __future__ import annotations

import math

from beam_pipeline.api_options import ApiPlan
from transforms.corpus.read import image_hashes
from transforms.remote.api_step import answer_store


def estimate(api: ApiPlan, corpus_root: str, corpus_version: str) -> str:
    """One line per API step: images, answers already stored, requests, price."""
    hashes = image_hashes(corpus_root, corpus_version)
    lines = [f"Dry run of {corpus_root} version {corpus_version} (no API called):"]
    total_requests, total_price, priced = 0, 0.0, True
    for step, chosen in api.apis.items():
        store = answer_store(corpus_root, step, chosen)
        to_send = len(hashes - store.stored_hashes())
        requests = math.ceil(to_send / chosen.images_per_request)
        line = (
            f"  {step:<22} {chosen.name}/{chosen.model_version}: {len(hashes)} images, "
            f"{len(hashes) - to_send} answered before, {to_send} to send in {requests} requests"
        )
        if (price := api.prices.get(chosen.name)) is not None:
            cost = chosen.billed_units(to_send, requests) / 1000 * price
            total_price += cost
            line += f", about {cost:,.2f} at {price:g} per 1,000"
        else:
            priced = False
        lines.append(line)
        total_requests += requests
    total = f"  total: {total_requests} requests"
    if priced:
        total += f", about {total_price:,.2f}"
    lines.append(
        total + " at least: each bundle may add one partial request, and images an "
        "earlier step fails on are not sent"
    )
    return "\n".join(lines)
