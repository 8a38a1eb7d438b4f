OMP_NUM_THREADS=1 PYTHONPATH=src python research/probe.py research/runs/c_p7_e4 research/results/c_p7_e4.test.json --kinds cls,last2_clsmean --test --test-only last2_clsmean=1,cls=3
