"""Offline tool environment: ``search`` and ``visit`` over a local corpus (BM25,
:mod:`~data_tools.synthesis.env.search`), DeepResearch result shapes, question sets, goals and the scripted policy.

Nothing is imported here: the light pieces (:mod:`~data_tools.synthesis.env.goals`) do not load the search index.
"""
