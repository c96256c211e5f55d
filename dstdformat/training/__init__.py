"""Training loops and their data: the refinement network (``refiner``), DeepSTD's collection
steps (reference template, per-scan shapes, refiner: ``collection``), resumable checkpoints
(``checkpoint``) and training data (``data``)."""
