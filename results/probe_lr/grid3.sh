P=/work/main/.venv/bin/python
$P lars.py fm_default_avg4.pt 3.2,6.4 256 90
$P lars.py fm_default_avg4.pt 3.2,6.4 64 90
