"""Evaluation: official benchmark scoring, the generation harness, reports and paper tables.

Kept import-light on purpose: ``scoring``, ``report`` and ``paper`` are pure Python, so importing
them (and the rewards that reuse the MMAU rule) never pulls in torch.
"""
