P=/work/main/.venv/bin/python
$P lars.py fm_default_avg4.pt 3,6 256 270
$P lars.py fm_default_avg4.pt 0.3,1,3 64 90
$P lars.py fm_default_avg4.pt 3,10,20 1024 90
