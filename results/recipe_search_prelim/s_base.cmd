/work/main/.venv/bin/python research/pt.py --output-dir research/runs/s_base --no-tensorboard --vis-every 1000 --model mae_vit_fashion --epochs 1 --warmup-epochs 0.3
