"""Multi-process test helpers: the scripts the DDP / FSDP2 tests launch, and :mod:`helpers.launch` to launch them.

Each ``*_run.py`` runs as a fresh interpreter (``python tests/helpers/NAME.py ...``) that starts its own 2 gloo
processes and dumps what every rank got; the tests compare the dumps.

================================  ==========================================================================
:mod:`helpers.ddp_run`            IMP on 2 DDP ranks: the toy model (``toy``) or adversarial VQA (``adversarial``)
:mod:`helpers.sharded_run`        the callback under DDP or FSDP2 (ModelParallelStrategy), seeded
:mod:`helpers.sharded_blocks_run` the building blocks of ``lightning_tickets.sharded`` on raw FSDP2 shards
:mod:`helpers.dist_threshold_run` the histogram threshold on parameters split unevenly over 2 ranks
================================  ==========================================================================
"""
