"""The fault suite: real nodes behind a fault proxy (:mod:`.proxy`), writers and checks
(:mod:`.cluster`), the scenarios (:mod:`.scenarios`), hostile inputs against a lone node
(:mod:`.target`, ``test_hostile_inputs``) and the long mode (``long_run.py``)."""
