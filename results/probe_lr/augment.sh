cd /work/main
C=/work/runs/recipe_digits/cells/patch7-seed0/pretrain/checkpoint-last.safetensors
for lr in 3.2 0.025; do
  .venv/bin/maelab linprobe --checkpoint $C --pool avg --layers 4 --optimizer lars --augment --batch-size 64 \
    --lr $lr --output-dir /work/runs/probe_lr/digits-augment-lr$lr --no-tensorboard > /work/runs/probe_lr/digits-augment-lr$lr.log 2>&1
  tail -1 /work/runs/probe_lr/digits-augment-lr$lr.log
done
