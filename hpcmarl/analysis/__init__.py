"""Post-hoc and live analysis of hpcmarl runs (no MPI): the code behind the
inspect/plot/export/compare/index/watch/evaluate commands."""
