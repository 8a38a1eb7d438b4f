/work/main/.venv/bin/python research/pt.py --output-dir research/runs/smoke --no-tensorboard --vis-every 1000 --model fm_e32_d2_h2_p7 --epochs 1
