"""Datasets: builders by name, example rows on disk, synthetic audio QA, contamination report.

Import-light on purpose (nothing is imported here): ``audsemthinker.data.registry`` for
``build_dataset`` / ``register_builder``, ``audsemthinker.data.examples`` for the row shapes
and ``load_examples`` / ``write_examples``.
"""
