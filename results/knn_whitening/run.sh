cd /work/main
for s in 0 1 2; do
  .venv/bin/maelab knn --checkpoint /work/runs/recipe_final/cells/patch7-seed$s/pretrain --pool avg --layers 4 --whiten 768 \
    --output-dir /work/runs/knn_whitening/default-seed$s --no-tensorboard > /work/runs/knn_whitening/default-seed$s.log 2>&1
  tail -1 /work/runs/knn_whitening/default-seed$s.log
done
.venv/bin/maelab knn --init pixels --whiten 384 --output-dir /work/runs/knn_whitening/pixels --no-tensorboard > /work/runs/knn_whitening/pixels.log 2>&1
tail -1 /work/runs/knn_whitening/pixels.log
