P=/work/main/.venv/bin/python
$P ../knn_whitening/feats.py /work/runs/recipe_digits/cells/patch7-seed0/pretrain/checkpoint-last.safetensors avg 4 digits_default_avg4.pt digits
$P lars.py fm_default_avg4.pt 0.03,0.1,0.3,1 256 90 sgd
$P lars.py digits_default_avg4.pt 0.1,3.2 64 90
$P lars.py digits_default_avg4.pt 3.2 64 900
$P lars.py digits_default_avg4.pt 3.2 64 2700
$P lars.py digits_default_avg4.pt 3.2 256 2700
