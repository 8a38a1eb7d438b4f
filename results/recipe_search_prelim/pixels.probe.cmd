OMP_NUM_THREADS=1 PYTHONPATH=src python research/probe.py pixels research/results/pixels.probe.json --grid 0.3,1,3
