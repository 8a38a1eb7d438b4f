"""What every training command shares: the spine its builders plug into (spine.py), the loop, run setup and
directories, optimizer and schedule, --resume, checkpoints, the seeded training loader, distributed and FSDP,
signals."""
