cd /work/main
for s in 0 1 2; do
  .venv/bin/maelab knn --checkpoint /work/runs/recipe_final/cells/patch7-seed$s/pretrain --pool avg --layers 4 --whiten 768 \
    --output-dir /work/runs/knn_whitening/default-seed$s --no-tensorboard > /work/runs/knn_whitening/default-seed$s.log 2>&1
  tail -1 /work/runs/knn_whitening/default-seed$s.log
done
.venv/bin/maelab knn --init pixels --whiten 384 --output-dir /work/runs/knn_whitening/pixels --no-tensorboard > /work/runs/knn_whitening/pixels.log 2>&1
tail -1 /work/runs/knn_whitening/pixels.log
# The 60-minute encoders of ../budget_curve/ (seed 0 on 2026-11-29 as budget60m, seeds 1 and 2 on 2026-11-30)
for s in 1 2; do
  .venv/bin/maelab knn --checkpoint /work/runs/budget_curve/cells/budget60m-seed$s/pretrain --pool avg --layers 4 --whiten 768 \
    --output-dir /work/runs/knn_whitening/budget60m-seed$s --no-tensorboard > /work/runs/knn_whitening/budget60m-seed$s.log 2>&1
  tail -1 /work/runs/knn_whitening/budget60m-seed$s.log
done
