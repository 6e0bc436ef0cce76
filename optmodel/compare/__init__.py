"""`optmodel compare`: one table and one plot across runs of any kind (quantize, prune,
distill, pipeline, ...), size against accuracy, with the base model as a reference row and
the Pareto-optimal runs marked. optmodel.facts.measures reads what a run's manifest holds (light: no torch);
the accuracy gate (optmodel.gate) reads the same measures."""
