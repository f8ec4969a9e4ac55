"""Curation: annotated traces in, training subsets out, with a stored reason for every drop.

The ``curate`` stage (:func:`siqkit.curate.stage.run_curate`) runs three layers in
order: rule filters, deduplication, then difficulty-aware and label-diverse selection; the
kept traces are exported in the training format, with named subsets beside them.

Modules, in pipeline order::

    config.py    the recipe's ``curate`` section (pydantic), every key with its default
    rules.py     rule filters, one table of named steps: format, truncation, wrong answer,
                 length, charset (SQL); refusal, loops, repetition (Python)
    reasons.py   every drop reason of the three layers, listed once
    minhash.py   shingles, MinHash signatures (datasketch's scheme, vectorised), LSH bands
    dedup.py     exact + near-duplicate clusters over a text column, checked exactly;
                 the similarity histogram and the threshold table
    images.py    near-identical images: perceptual hash + thumbnail, clustered
    select.py    difficulty quotas, label caps, rare-labels-first sampling
    subsets.py   filtered views of the curated set
    datasets.py  the training contract (ExportRow); JSONL/Parquet/LLaMA-Factory files, images
    card.py      the dataset card (README.md) and LLaMA-Factory's dataset_info.json entry
    stage.py     the stage itself, and the summary ``siqkit inspect`` shows
    commands.py  ``siqkit dedup`` and ``siqkit subset``
"""
